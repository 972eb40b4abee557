"""NoProp-DT (Li, Teh & Pascanu, 2025, arXiv 2503.24322): T denoising blocks, each trained on its own loss.

Block t sees the image x and a noisy label embedding z_{t−1} ~ q(z_{t−1} | y) and predicts the clean
embedding as û_t = softmax(logits_t) · W_embed. Training never feeds one block's output to another,
so no gradient crosses a block boundary; the blocks are chained only at inference time. The class
embeddings W_embed and the linear head on z_T are shared: they are trained with the head's
cross-entropy and the KL term on z_0 and, for learned embeddings, also receive gradients from every
block's loss through its target u_y (as in the paper's joint objective); block parameters only ever
receive gradients from their own block's loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.schedules import Schedule
from models.encoders import ImageEncoder, mlp


class DenoisingBlock(nn.Module):
    """One NoProp-DT block: image branch + noisy-label branch → fused class logits → û."""

    def __init__(self, in_channels: int, image_size: int, embed_dim: int, num_classes: int,
                 decoder_hidden: int | None = None):
        super().__init__()
        self.image = ImageEncoder(in_channels, image_size)
        self.label = nn.Sequential(mlp([embed_dim, 256, 256]), nn.BatchNorm1d(256), nn.ReLU(inplace=True))
        self.fuse = mlp([512, 256, 128, num_classes])
        self.decoder: nn.Module | None = None
        if decoder_hidden:
            # Residual MLP on û, last layer zero-initialised: it starts as the paper's block and may
            # learn a nonlinear correction. This decoder is our extension, not part of the paper.
            self.decoder = nn.Sequential(nn.Linear(embed_dim, decoder_hidden), nn.GELU(),
                                         nn.Linear(decoder_hidden, embed_dim))
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor, embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fuse(torch.cat([self.image(x), self.label(z)], dim=1))
        u_hat = torch.softmax(logits.float(), dim=1) @ embed.float()
        if self.decoder is not None:
            u_hat = u_hat + self.decoder(u_hat)
        return u_hat.float(), logits


def class_prototypes(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class, the image with the smallest median Euclidean distance to the rest of its class."""
    protos = []
    for c in range(num_classes):
        members = images[labels == c].flatten(1).float()
        dist = torch.cdist(members, members)
        dist.fill_diagonal_(float("nan"))  # distances to the *rest* of the class
        protos.append(members[dist.nanmedian(dim=1).values.argmin()])
    return torch.stack(protos)


READOUTS = ("head", "last_block")


class NoPropDT(nn.Module):
    """The T-block NoProp-DT model. Also the architecture of the backprop-blocks baseline.

    `readout` says what the chain's prediction is. "head" (NoProp-DT): the linear head on z_T.
    "last_block" (backprop-blocks): block T's own class logits, the same chain z_0 → z_{T−1} feeding it.
    End to end, a head on z_T ≈ softmax(logits_T)·W_embed trains badly: its logits start nearly flat on
    the simplex, and a block whose softmax saturates on a wrong class passes back almost no gradient,
    so whole classes are never predicted (measured: 60.6 % on MNIST after 3 epochs, 3 of 10 classes
    dead). Cross-entropy on block T's logits has no such bottleneck; the T blocks stay the same.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, schedule: Schedule, *,
                 embedding: str = "onehot", embed_dim: int | None = None,
                 prototypes: torch.Tensor | None = None, decoder_hidden: int | None = None,
                 readout: str = "head"):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose from {', '.join(READOUTS)}")
        self.readout = readout
        if embedding == "onehot":
            self.register_buffer("fixed_embed", torch.eye(num_classes))
        elif embedding == "learned":
            weight = torch.empty(num_classes, embed_dim or num_classes)
            nn.init.orthogonal_(weight)
            self.learned_embed = nn.Parameter(weight)
        elif embedding == "prototype":
            if prototypes is None:
                raise ValueError("prototype embeddings need the class prototypes")
            self.register_buffer("fixed_embed", prototypes.flatten(1).float().clone())
        else:
            raise ValueError(f"unknown embedding {embedding!r}")
        self.embedding = embedding
        self.num_classes = num_classes
        d = self.embed.shape[1]
        self.blocks = nn.ModuleList(
            DenoisingBlock(in_channels, image_size, d, num_classes, decoder_hidden) for _ in range(schedule.T)
        )
        self.head = nn.Linear(d, num_classes) if readout == "head" else None
        for name in ("alpha_bar", "weights", "a", "b", "c"):
            self.register_buffer(name, getattr(schedule, name).float())

    @property
    def T(self) -> int:
        return len(self.blocks)

    @property
    def embed(self) -> torch.Tensor:
        return self.learned_embed if self.embedding == "learned" else self.fixed_embed

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the blocks: the head and, if learned, the class embeddings."""
        return list(self.head.parameters()) + ([self.learned_embed] if self.embedding == "learned" else [])

    def sample_latent(self, y: torch.Tensor, index: int) -> torch.Tensor:
        """z_index ~ q(z_index | y) = N(√ᾱ·u_y, (1 − ᾱ)·I), the forward noising process."""
        u = self.embed[y]
        ab = self.alpha_bar[index]
        return ab.sqrt() * u + (1 - ab).sqrt() * torch.randn_like(u)

    def block_loss(self, t: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted loss, unweighted MSE) of block t (1-based), trained on z_{t−1} from q, not a block."""
        z_prev = self.sample_latent(y, t - 1)
        u_hat, _ = self.blocks[t - 1](x, z_prev, self.embed)
        mse = (u_hat - self.embed[y].float()).pow(2).sum(dim=1).mean()
        return self.weights[t - 1] * mse, mse

    def shared_loss(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-entropy of the head on z_T ~ q(z_T | y) plus KL(q(z_0 | y) ‖ N(0, I))."""
        ce = F.cross_entropy(self.head(self.sample_latent(y, self.T)).float(), y)
        ab0 = self.alpha_bar[0]
        u = self.embed[y].float()
        d = u.shape[1]
        kl = 0.5 * (ab0 * u.pow(2).sum(dim=1) + d * ((1 - ab0) - 1 - torch.log(1 - ab0))).mean()
        return ce + kl, ce, kl

    def step(self, t: int, x: torch.Tensor, z: torch.Tensor, noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One inference step z_{t−1} → z_t = a_t·û_t + b_t·z_{t−1} + √c_t·ε; also returns the prediction."""
        u_hat, logits = self.blocks[t - 1](x, z, self.embed)
        z = self.a[t - 1] * u_hat + self.b[t - 1] * z
        if noise:
            z = z + self.c[t - 1].sqrt() * torch.randn_like(z)
        prediction = self.head(z) if self.head is not None else logits
        return z, prediction.float()

    def initial_latent(self, batch: int, noise: bool, like: torch.Tensor) -> torch.Tensor:
        """z_0 ~ N(0, I), or its mean (zeros) for deterministic inference."""
        shape = (batch, self.embed.shape[1])
        return torch.randn(shape, device=like.device) if noise else torch.zeros(shape, device=like.device)

    def forward(self, x: torch.Tensor, noise: bool = True) -> torch.Tensor:
        """Class logits from the full chain z_0 → z_T and the readout."""
        return self.trace(x, noise)[-1]

    def trace(self, x: torch.Tensor, noise: bool) -> list[torch.Tensor]:
        """The readout's logits after each of the T steps: the 'stop after k blocks' curve."""
        z = self.initial_latent(x.shape[0], noise, x)
        out = []
        for t in range(1, self.T + 1):
            z, prediction = self.step(t, x, z, noise)
            out.append(prediction)
        return out
