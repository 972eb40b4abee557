"""Batched, on-device data augmentation (random crop with padding + horizontal flip) for CIFAR-10.

Done on whole batches with tensor indexing so it costs no per-sample Python work and runs on the
training device; torchvision's per-image transforms would force a DataLoader round trip.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_and_flip(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image gets its own random shift of up to `pad` pixels and a 50% horizontal flip."""
    n, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator).to(dev)
    rows = (torch.arange(h, device=dev) + dy)[:, None, :, None]  # (n,1,h,1)
    cols = torch.arange(w, device=dev) + dx  # (n,w)
    flip = torch.rand(n, generator=generator).to(dev) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # (n,1,1,w)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    return padded[batch, chans, rows, cols]
