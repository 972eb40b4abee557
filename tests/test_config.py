"""Configs: shipped files are valid, every bad value is named, overrides refuse unknown keys."""
from pathlib import Path

import pytest

from bench import config as config_lib
from bench.config import ConfigError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name != "search_space.yaml"], ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = config_lib.load(path)
    assert cfg["dataset"] in ("mnist", "cifar10")


@pytest.mark.parametrize(
    "key,value",
    [
        ("noprop.T", 0),
        ("train.epochs", 0),
        ("train.lr", 0.0),
        ("train.lr", -1e-3),
        ("noprop.schedule.family", "exponential"),
        ("noprop.embedding", "random"),
        ("methods", ["noprop_dt", "magic"]),
        ("train.batch_size", 1.5),
        ("noprop.order", "sideways"),
    ],
)
def test_invalid_values_name_their_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_lib.load(None, {key: value})


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        config_lib.load(None, {"train.learning_rate": 0.1})
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.001\n  mometum: 0.9\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.mometum'"):
        config_lib.load(f)


def test_schedule_is_checked_at_load():
    with pytest.raises(ConfigError, match="noprop.schedule"):
        config_lib.load(None, {"noprop.schedule.alpha_min": 0.99, "noprop.schedule.snr_max": 2.0})


def test_quick_profile_and_overrides():
    cfg = config_lib.load(None, dict([config_lib.parse_override("train.lr=3e-4")]))
    assert cfg["train"]["lr"] == pytest.approx(3e-4)
    quick = config_lib.apply_quick(cfg)
    assert quick["train"]["epochs"] == cfg["quick"]["epochs"]
    assert quick["data"]["train_subset"] == cfg["quick"]["train_subset"]
    assert cfg["data"]["train_subset"] is None  # the original is untouched


def test_resolved_config_round_trips(tmp_path):
    cfg = config_lib.load(None, {"noprop.T": 4})
    f = tmp_path / "resolved.yaml"
    f.write_text(config_lib.dump(cfg))
    assert config_lib.load(f) == cfg
