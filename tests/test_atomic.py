"""atomic_path: the final name only ever holds a complete file."""

import pytest

from xfads_cli.atomic import atomic_path, partial_glob


def test_a_clean_block_renames_into_place(tmp_path):
    out = tmp_path / "rates.h5"
    with atomic_path(out) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".h5" and tmp.name.startswith(".")
        tmp.write_text("complete")
        assert not out.exists()
    assert out.read_text() == "complete"
    assert list(tmp_path.iterdir()) == [out]


def test_a_failing_block_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "run.nwb"
    out.write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out, ".nwb") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert out.read_text() == "previous"
    assert list(tmp_path.glob(partial_glob(out))) == []
