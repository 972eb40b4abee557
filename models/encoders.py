"""Building blocks shared by every method, so that the methods differ only in how they are trained."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CheapDropout(nn.Module):
    """Dropout whose CPU mask costs a quarter of the random-number calls of `nn.Dropout`.

    On CPU, `nn.Dropout` draws one Mersenne-Twister number per element, single-threaded; it was ~20 % of
    a NoProp-DT training step on 2 cores. Here every 64-bit draw is cut into four 15-bit uniforms, so an
    element is dropped with probability ceil(p·2¹⁵)/2¹⁵ (within 3·10⁻⁵ of p) and the survivors are scaled
    by 1/(1 − p) as usual. Only the boolean mask is kept for backward. Off the CPU (CUDA draws masks
    cheaply in parallel) and in eval mode it is exactly `nn.Dropout`.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training)
        dense = x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last))
        if not dense:
            x = x.contiguous()
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
        # the mask takes x's strides, so channels_last inputs stay channels_last
        lanes = words.view(torch.int16)[:n].as_strided(x.shape, x.stride())
        keep = (lanes & 0x7FFF) >= math.ceil(self.p * 2**15)
        return torch.where(keep, x, 0) * (1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def conv_stage(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        CheapDropout(dropout),
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
