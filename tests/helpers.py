"""Small generated fixtures shared by the model and engine tests (no real data needed)."""
from __future__ import annotations

import copy

import torch

from bench import config as config_lib
from bench.data import DataSplits

SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}


def tiny_config(**overrides) -> dict:
    """A valid config with T=3 and small batches, for fast CPU tests."""
    cfg = copy.deepcopy(config_lib.DEFAULTS)
    cfg["noprop"]["T"] = 3
    cfg["train"].update(batch_size=16, eval_batch_size=32, epochs=1)
    cfg["precision"] = "fp32"
    for key, value in overrides.items():
        config_lib.set_path(cfg, key, value)
    config_lib.validate(cfg)
    return cfg


def synthetic_splits(dataset: str = "mnist", n: int = 48, seed: int = 0) -> DataSplits:
    """Random images whose class is written into their brightness, so a model can learn something."""
    channels, size = SHAPES[dataset]
    g = torch.Generator().manual_seed(seed)

    def split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(count) % 10
        x = torch.randn(count, channels, size, size, generator=g) * 0.1 + (y.float() / 10)[:, None, None, None]
        return x, y

    (tx, ty), (vx, vy), (sx, sy) = split(n), split(n // 2), split(n // 2)
    return DataSplits(dataset, tx, ty, vx, vy, sx, sy, 10, channels, size, "synthetic")
