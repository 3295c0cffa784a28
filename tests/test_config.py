import pytest

from xfads_cli.config import Config, DataConfig, dump_config, load_config, resolved_config
from xfads_cli.errors import UsageError


def test_defaults_work_without_a_file():
    cfg = load_config()
    assert cfg.data.bin_ms == 20.0
    assert cfg.data == DataConfig()


def test_yaml_then_overrides_last(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  bin_ms: 10\n  window_ms: [-250, 450]\ntrain:\n  lr: 0.01\n")
    cfg = load_config(path, ["train.lr=3e-4", "data.behavior=hand_vel"])
    assert cfg.data.bin_ms == 10.0 and isinstance(cfg.data.bin_ms, float)
    assert cfg.data.window_ms == (-250.0, 450.0)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.behavior == ("hand_vel",)


def test_resolved_config_round_trips():
    cfg = load_config(None, ["data.split=[0.6, 0.2, 0.2]", "model.latent_dim=16", "seed=3"])
    raw = resolved_config(cfg)
    assert raw["data"]["split"] == [0.6, 0.2, 0.2]
    assert Config.from_dict(raw) == cfg
    import yaml

    assert Config.from_dict(yaml.safe_load(dump_config(cfg))) == cfg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.bin_m=1", "did you mean 'bin_ms'"),
        ("dat.bin_ms=1", "did you mean 'data'"),
        ("model.dynamics=mpl", "did you mean 'mlp'"),
        ("train.lr=fast", "must be a number"),
        ("train.batch_size=1.5", "must be an integer"),
        ("data.window_ms=[1]", "list of 2 values"),
        ("data.bin_ms", "section.key=value"),
        ("data=3", "must be a mapping"),
        ("model.latent_dim=-1", "model.latent_dim must be >= 1 and <= 65536, got -1; e.g. --set model.latent_dim=8"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("train.lr=0", "train.lr must be > 0"),
        ("train.lr_decay=1.5", "train.lr_decay must be > 0 and <= 1"),
        ("train.drop_local=1", "train.drop_local must be >= 0 and < 1"),
        ("train.time_limit_min=-5", "e.g. --set train.time_limit_min=1"),
        ("model.hyper_hidden=-1", "model.hyper_hidden must be >= 0"),
        ("eval.samples=0", "eval.samples must be >= 1"),
    ],
)
def test_strict_errors_name_the_fix(override, fragment):
    with pytest.raises(UsageError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(UsageError, match="mapping"):
        load_config(listing)
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_sample_configs_are_valid():
    from conftest import ROOT

    # sweep_*.yaml are search spaces for `xfads sweep`, not configs (tests/test_sweep.py loads them)
    files = sorted(p for p in (ROOT / "sample_configs").glob("*.yaml") if not p.name.startswith("sweep_"))
    assert files, "sample_configs/ should hold examples"
    for path in files:
        load_config(path)


def test_the_removed_train_device_is_ignored_with_a_warning_naming_the_option(tmp_path):
    """train.device was never read (the device comes from --device); a config.yaml written by an older
    fit still loads, and says so."""
    path = tmp_path / "old_run_config.yaml"
    path.write_text("train:\n  lr: 0.02\n  device: auto\n")
    with pytest.warns(UserWarning, match="--device"):
        config = load_config(path)
    assert config.train.lr == 0.02
    with pytest.warns(UserWarning, match="train.device is no longer a config key"):
        load_config(overrides=["train.device=cuda"])
    assert "device" not in resolved_config(load_config())["train"]
