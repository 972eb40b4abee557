"""Building blocks shared by every method, so that the methods differ only in how they are trained."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _Masked(torch.autograd.Function):
    """x · mask with mask saved for backward: ReLU's gradient and dropout's in one multiplication."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class ReLUDropout(nn.Module):
    """ReLU followed by dropout, fused on CPU so that a training step makes no per-element random call.

    On CPU, `nn.Dropout` draws one Mersenne-Twister number per element, single-threaded (~20 % of a
    NoProp-DT step on 2 cores), and boolean masks and ReLU's backward run unvectorised. Here every 64-bit
    draw is cut into four 16-bit uniforms, so an element is dropped with probability ceil(p·2¹⁶)/2¹⁶
    (within 2·10⁻⁵ of p), and ReLU's mask, the dropout mask and the 1/(1 − p) scale become one tensor of
    x's dtype, applied by a single multiplication forward and backward. Off the CPU (CUDA draws masks
    cheaply in parallel) and in eval mode it is exactly `nn.ReLU` then `nn.Dropout`.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return F.dropout(F.relu(x), self.p, self.training)
        dense = x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last))
        if not dense:
            x = x.contiguous()
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        # four uniform int16 lanes per draw; the mask takes x's strides, so channels_last stays so
        lanes = words.view(torch.int16)[:n].as_strided(x.shape, x.stride())
        threshold = math.ceil(self.p * 2**16) - 2**15  # keep a lane iff lane >= threshold
        keep = (lanes.float() - (threshold - 1)).clamp_(0, 1)  # exactly 0 or 1: integers, exact in fp32
        mask = torch.relu(x.detach()).sign_().mul_(keep.to(x.dtype)).mul_(1 / (1 - self.p))
        return _Masked.apply(x, mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def conv_stage(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        # max-pooling before ReLU is exactly ReLU before max-pooling (both monotone, same gradients),
        # and ReLU then runs on a quarter of the elements
        nn.MaxPool2d(2),
        ReLUDropout(dropout),
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
