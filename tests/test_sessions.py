import pytest

from xfads_cli.commands.simulate import simulate
from xfads_cli.config import DataConfig
from xfads_cli.data.sessions import expand_sources, load_sessions
from xfads_cli.errors import UsageError


@pytest.fixture
def two_files(tmp_path):
    for i, p in enumerate((0.5, 1.5)):
        simulate("hopf", tmp_path / f"s{i}.nwb", neurons=4 + i, trials=4, bins=10, seed=i, param=p)
    return tmp_path


def test_directory_and_manifest(two_files):
    sources = expand_sources([two_files], DataConfig())
    assert [s.path.name for s in sources] == ["s0.nwb", "s1.nwb"]
    manifest = two_files / "sessions.yaml"
    manifest.write_text("sessions:\n  - path: s0.nwb\n    name: first\n    data: {bin_ms: 40}\n  - s1.nwb\n")
    data = load_sessions([manifest], DataConfig())
    assert [d.session for d in data] == ["first", "s1"]
    assert data[0].bin_ms == 40.0 and data[1].bin_ms == 20.0
    assert [d.n_neurons for d in data] == [4, 5]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("sessions: []\n", "non-empty list"),
        ("session:\n  - s0.nwb\n", "did you mean 'sessions'"),
        ("sessions:\n  - {file: s0.nwb}\n", "needs a 'path'"),
        ("sessions:\n  - {path: s0.nwb, nam: x}\n", "did you mean 'name'"),
        ("sessions:\n  - {path: s0.nwb, data: {bin_m: 3}}\n", "did you mean 'bin_ms'"),
        ("sessions:\n  - {path: s0.nwb, name: a}\n  - {path: s1.nwb, name: a}\n", "two sessions are named 'a'"),
    ],
)
def test_manifest_errors(two_files, text, fragment):
    manifest = two_files / "m.yaml"
    manifest.write_text(text)
    with pytest.raises(UsageError, match=fragment):
        expand_sources([manifest], DataConfig())
