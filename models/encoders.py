"""Building blocks shared by every method, so that the methods differ only in how they are trained."""
from __future__ import annotations

import torch
from torch import nn


def conv_stage(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
    )


class ImageEncoder(nn.Module):
    """The paper's image branch: three conv stages (32, 64, 128 channels) and a 256-d projection."""

    def __init__(self, in_channels: int, image_size: int, out_dim: int = 256, dropout: float = 0.2):
        super().__init__()
        widths = (32, 64, 128)
        stages, c_in = [], in_channels
        for w in widths:
            stages.append(conv_stage(c_in, w, dropout))
            c_in = w
        self.features = nn.Sequential(*stages)
        side = image_size // 2 ** len(widths)
        self.project = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[-1] * side * side, out_dim),
            nn.BatchNorm1d(out_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear → BatchNorm → ReLU for every layer but the last, which stays linear."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
