"""Experiment configs: one YAML file per experiment, CLI overrides, strict validation.

A config is a nested dict. Every key must be known (a typo is an error, not a silently
ignored setting) and every value is checked before any training starts, so a bad value
costs seconds, not an hour. The resolved config is saved next to the results.
"""
from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench import schedules

METHODS = ("noprop_dt", "noprop_dt_decoder", "backprop_cnn", "backprop_blocks")
EMBEDDINGS = ("onehot", "learned", "prototype")
ORDERS = ("interleaved", "blockwise")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 as a float (YAML 1.2 style), as researchers write it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """An invalid config value; the message names the key."""


DEFAULTS: dict[str, Any] = {
    "dataset": "mnist",
    "methods": list(METHODS),
    "seed": 0,
    "seeds": 1,
    "device": "auto",
    "precision": "auto",
    "compile": False,
    "data": {"val_size": 5000, "split_seed": 0, "train_subset": None, "val_subset": None, "test_subset": None},
    "train": {
        "epochs": 10,
        "batch_size": 128,
        "lr": 1e-3,
        "weight_decay": 1e-3,
        "eval_batch_size": 1000,
        "augment": False,
    },
    "noprop": {
        "T": 10,
        "eta": 0.1,
        "embedding": "onehot",
        "embed_dim": None,
        "order": "interleaved",
        "inference_samples": 1,
        "decoder_hidden": 128,
        "schedule": {"family": "cosine", "s": 0.008, "alpha_min": 1e-3, "snr_max": 1e4, "steepness": 6.0},
    },
    "quick": {"epochs": 1, "train_subset": 3000, "val_subset": 1000, "test_subset": 2000},
}


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _optional_positive_int(v: Any) -> bool:
    return v is None or _positive_int(v)


def _positive_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _nonneg_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda v: v in choices


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key path -> (check, what a valid value looks like)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dataset": (_one_of(("mnist", "cifar10")), "one of mnist, cifar10"),
    "methods": (
        lambda v: isinstance(v, list) and len(v) > 0 and all(m in METHODS for m in v) and len(set(v)) == len(v),
        f"a non-empty list of distinct methods from {', '.join(METHODS)}",
    ),
    "seed": (_int, "an integer"),
    "seeds": (_positive_int, "an integer >= 1"),
    "device": (_one_of(DEVICES), f"one of {', '.join(DEVICES)}"),
    "precision": (_one_of(PRECISIONS), f"one of {', '.join(PRECISIONS)}"),
    "compile": (_bool, "true or false"),
    "data.val_size": (_positive_int, "an integer >= 1"),
    "data.split_seed": (_int, "an integer"),
    "data.train_subset": (_optional_positive_int, "null or an integer >= 1"),
    "data.val_subset": (_optional_positive_int, "null or an integer >= 1"),
    "data.test_subset": (_optional_positive_int, "null or an integer >= 1"),
    "train.epochs": (_positive_int, "an integer >= 1"),
    "train.batch_size": (_positive_int, "an integer >= 1"),
    "train.lr": (_positive_float, "a number > 0"),
    "train.weight_decay": (_nonneg_float, "a number >= 0"),
    "train.eval_batch_size": (_positive_int, "an integer >= 1"),
    "train.augment": (_bool, "true or false"),
    "noprop.T": (_positive_int, "an integer >= 1"),
    "noprop.eta": (_positive_float, "a number > 0"),
    "noprop.embedding": (_one_of(EMBEDDINGS), f"one of {', '.join(EMBEDDINGS)}"),
    "noprop.embed_dim": (_optional_positive_int, "null (number of classes) or an integer >= 1"),
    "noprop.order": (_one_of(ORDERS), f"one of {', '.join(ORDERS)}"),
    "noprop.inference_samples": (_positive_int, "an integer >= 1"),
    "noprop.decoder_hidden": (_positive_int, "an integer >= 1"),
    "noprop.schedule.family": (_one_of(schedules.FAMILIES), f"one of {', '.join(schedules.FAMILIES)}"),
    "noprop.schedule.s": (_nonneg_float, "a number >= 0"),
    "noprop.schedule.alpha_min": (lambda v: _positive_float(v) and v < 1, "a number in (0, 1)"),
    "noprop.schedule.snr_max": (_positive_float, "a number > 0"),
    "noprop.schedule.steepness": (_positive_float, "a number > 0"),
    "quick.epochs": (_positive_int, "an integer >= 1"),
    "quick.train_subset": (_positive_int, "an integer >= 1"),
    "quick.val_subset": (_positive_int, "an integer >= 1"),
    "quick.test_subset": (_positive_int, "an integer >= 1"),
}


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: the form used for validation and MLflow params."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _merge(base: dict[str, Any], override: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key '{path}'")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{path}' must be a mapping")
            merged[key] = _merge(base[key], value, path + ".")
        else:
            merged[key] = value
    return merged


def set_path(cfg: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted key, refusing keys that do not exist."""
    node = cfg
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"unknown config key '{path}'")
        node = node[part]
    if parts[-1] not in node or isinstance(node[parts[-1]], dict):
        raise ConfigError(f"unknown config key '{path}'")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=3e-4' -> ('train.lr', 0.0003), values parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    return key.strip(), _yaml(raw)


def validate(cfg: dict[str, Any]) -> None:
    """Check every value; the first bad one raises ConfigError naming its key."""
    flat = flatten(cfg)
    for key, value in flat.items():
        if key not in RULES:
            raise ConfigError(f"unknown config key '{key}'")
        check, expected = RULES[key]
        if not check(value):
            raise ConfigError(f"invalid value for '{key}': {value!r} (expected {expected})")
    sched = cfg["noprop"]["schedule"]
    try:
        schedules.make_schedule(cfg["noprop"]["T"], cfg["noprop"]["eta"], **sched)
    except schedules.ScheduleError as err:
        raise ConfigError(f"invalid noise schedule 'noprop.schedule': {err}") from None


def load(path: str | Path | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- YAML file <- dotted overrides, validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = _yaml(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        cfg = _merge(cfg, loaded)
    for key, value in (overrides or {}).items():
        set_path(cfg, key, value)
    validate(cfg)
    return cfg


def apply_quick(cfg: dict[str, Any]) -> dict[str, Any]:
    """The --quick profile: few epochs on a subset of the real data."""
    out = copy.deepcopy(cfg)
    out["train"]["epochs"] = cfg["quick"]["epochs"]
    for split in ("train", "val", "test"):
        key = f"{split}_subset"
        current = out["data"][key]
        out["data"][key] = cfg["quick"][key] if current is None else min(current, cfg["quick"][key])
    return out


def dump(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
