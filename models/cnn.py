"""The standard backprop baseline: the NoProp block's image branch plus a linear classifier."""
from __future__ import annotations

import torch
from torch import nn

from models.encoders import ImageEncoder


class BackpropCNN(nn.Module):
    """Same conv stack as one NoProp-DT block's image branch, trained end to end with cross-entropy."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int):
        super().__init__()
        self.encoder = ImageEncoder(in_channels, image_size)
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))
