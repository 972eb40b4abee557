"""One training step per method and precision, on a fixed synthetic batch, for the speed benchmarks."""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from bench import config as config_lib
from bench.data import DataSplits
from bench.training import build_engine, build_model

SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}


def synthetic_batch(dataset: str, batch: int, device: torch.device) -> DataSplits:
    channels, size = SHAPES[dataset]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=g).to(device)
    y = (torch.arange(batch) % 10).to(device)
    return DataSplits(dataset, x, y, x, y, x, y, 10, channels, size, "synthetic")


def make_step(method: str, dataset: str, precision: str, device: torch.device, *, eager: bool = False,
              batch: int = 128, T: int = 10, compile: bool = False) -> Callable[[], None]:
    """A closure that runs one training step (for NoProp-DT: all T blocks on one batch) and waits for it.

    `eager=True` is the plain baseline: default memory format and unfused AdamW (pass precision fp32).
    """
    cfg = copy.deepcopy(config_lib.DEFAULTS)
    cfg["noprop"]["T"] = T
    cfg["compile"] = compile
    data = synthetic_batch(dataset, batch, device)
    torch.manual_seed(0)
    engine = build_engine(method, build_model(method, cfg, data), cfg, device, precision, seed=0, lean=not eager)
    x, y = data.train_x.contiguous(memory_format=engine.memory_format), data.train_y
    engine.model.train()

    def step() -> None:
        engine.step(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step
