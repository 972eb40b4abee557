"""Training engines: how each method turns a batch into parameter updates, and how it is evaluated.

Steps are lean: data already lives on the training device, batches are sliced from it, metrics are
accumulated on the device and read back only every `SYNC_EVERY` batches (to check for NaN and update
the progress bar), grads are freed with `set_to_none=True`, evaluation runs in large batches under
`torch.inference_mode()`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.augment import crop_and_flip
from bench.hardware import autocast
from bench.memory import SavedActivations, optimizer_state_bytes, tensor_bytes
from models.noprop import NoPropDT

SYNC_EVERY = 25


class NonFiniteLoss(RuntimeError):
    """Training produced NaN or inf; the message names the method, epoch and block."""


def make_optimizer(params: list[nn.Parameter], train_cfg: dict[str, Any], lean: bool = True) -> torch.optim.AdamW:
    """AdamW; `lean` uses the fused kernel (one kernel per step instead of several per tensor, CPU and CUDA)."""
    return torch.optim.AdamW(params, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"], fused=lean)


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """A fresh random order every epoch; the last partial batch is kept (BatchNorm needs >1 sample)."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if idx.numel() > 1:
            yield idx


class Engine:
    """Shared plumbing: device, precision, batching, progress, NaN checks, memory counting."""

    name = "engine"

    def __init__(self, method: str, model: nn.Module, cfg: dict[str, Any], device: torch.device,
                 precision: str, seed: int, lean: bool = True):
        """`lean=False` gives the plain eager baseline of the benchmarks: default memory format, unfused AdamW."""
        self.method = method
        self.lean = lean
        # channels_last pays for bf16 (oneDNN) and on CUDA; on CPU in fp32 it measured no faster
        use_cl = lean and (device.type == "cuda" or precision == "bf16")
        self.memory_format = torch.channels_last if use_cl else torch.contiguous_format
        self.model = model.to(device).to(memory_format=self.memory_format)
        self.cfg = cfg
        self.train_cfg = cfg["train"]
        self.device = device
        self.precision = precision
        self.generator = torch.Generator().manual_seed(seed)
        self.counted_peak_bytes: int | None = None

    def _batch(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(x.device)
        xb, yb = x[idx], y[idx]
        if self.train_cfg["augment"]:
            xb = crop_and_flip(xb, generator=self.generator)
        return xb.contiguous(memory_format=self.memory_format), yb

    def _check_finite(self, value: torch.Tensor, epoch: int, where: str) -> None:
        if not torch.isfinite(value).all():
            raise NonFiniteLoss(f"{self.method}: non-finite loss in epoch {epoch}, {where}")

    def _progress(self, total: int, epoch: int, epochs: int, position: int) -> tqdm:
        return tqdm(total=total, desc=f"{self.method} epoch {epoch}/{epochs}", unit="batch",
                    leave=False, position=position, dynamic_ncols=True)

    def param_bytes(self) -> int:
        return tensor_bytes(self.model.parameters())

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, epoch: int, epochs: int,
                    position: int = 1) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, diagnostics: bool = False) -> dict[str, float]:
        raise NotImplementedError

    def _chunks(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = self.train_cfg["eval_batch_size"]
        for start in range(0, x.shape[0], size):
            yield x[start:start + size].contiguous(memory_format=self.memory_format), y[start:start + size]


class BackpropEngine(Engine):
    """End-to-end cross-entropy training: the backprop CNN and the backprop-blocks baseline."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.optimizer = make_optimizer(list(self.model.parameters()), self.train_cfg, self.lean)
        self.samples = self.cfg["noprop"]["inference_samples"] if isinstance(self.model, NoPropDT) else 1

    def step(self, xb: torch.Tensor, yb: torch.Tensor, measure: bool = False) -> torch.Tensor:
        """One end-to-end update; with `measure`, record what the step holds at its peak."""
        with SavedActivations(self.model) if measure else contextlib.nullcontext() as saved:
            with autocast(self.device, self.precision):
                logits = self.model(xb)
            loss = F.cross_entropy(logits.float(), yb)
        loss.backward()
        self.optimizer.step()
        if measure:
            grads = tensor_bytes(p.grad for p in self.model.parameters() if p.grad is not None)
            self.counted_peak_bytes = (self.param_bytes() + optimizer_state_bytes([self.optimizer])
                                       + saved.bytes + grads)
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def train_epoch(self, x, y, epoch, epochs, position=1):
        self.model.train()
        total = torch.zeros((), device=self.device)
        count = 0
        bs = self.train_cfg["batch_size"]
        n_batches = -(-x.shape[0] // bs)
        with self._progress(n_batches, epoch, epochs, position) as bar:
            for i, idx in enumerate(batches(x.shape[0], bs, self.generator)):
                xb, yb = self._batch(x, y, idx)
                loss = self.step(xb, yb, measure=self.counted_peak_bytes is None)
                total += loss * yb.shape[0]
                count += yb.shape[0]
                if (i + 1) % SYNC_EVERY == 0:
                    self._check_finite(total, epoch, f"batch {i + 1}")
                    bar.set_postfix(loss=f"{total.item() / count:.4f}")
                bar.update(1)
        self._check_finite(total, epoch, "end of epoch")
        return {"train_loss": total.item() / count}

    @torch.inference_mode()
    def evaluate(self, x, y, diagnostics=False):
        self.model.eval()
        if isinstance(self.model, NoPropDT):
            return chain_metrics(self.model, self._chunks(x, y), self.device, self.precision,
                                 self.samples, diagnostics, block_mse=False)
        correct = torch.zeros((), device=self.device)
        for xb, yb in self._chunks(x, y):
            with autocast(self.device, self.precision):
                correct += (self.model(xb).argmax(1) == yb).sum()
        return {"acc": correct.item() / x.shape[0]}


class NoPropEngine(Engine):
    """NoProp-DT: each block has its own AdamW and its own loss; the head and embeddings share one."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        model: NoPropDT = self.model
        self.block_opts = [make_optimizer(list(b.parameters()), self.train_cfg, self.lean) for b in model.blocks]
        self.shared_opt = make_optimizer(model.shared_parameters(), self.train_cfg, self.lean)
        self.order = self.cfg["noprop"]["order"]
        self.samples = self.cfg["noprop"]["inference_samples"]

    def _block_step(self, t: int, xb: torch.Tensor, yb: torch.Tensor, measure: bool) -> tuple[torch.Tensor, int]:
        """Train block t on one batch; return its MSE and, when measuring, its activation+grad bytes."""
        opt = self.block_opts[t - 1]
        with SavedActivations(self.model) if measure else contextlib.nullcontext() as saved:
            with autocast(self.device, self.precision):
                weighted, mse = self.model.block_loss(t, xb, yb)
        weighted.backward()
        opt.step()
        held = 0
        if measure:
            grads = tensor_bytes(p.grad for p in self.model.blocks[t - 1].parameters() if p.grad is not None)
            held = saved.bytes + grads
        opt.zero_grad(set_to_none=True)  # free this block's grads before the next block runs
        return mse.detach(), held

    def _shared_step(self, yb: torch.Tensor) -> torch.Tensor:
        loss, ce, _ = self.model.shared_loss(yb)
        loss.backward()
        self.shared_opt.step()
        self.shared_opt.zero_grad(set_to_none=True)
        return ce.detach()

    def step(self, xb: torch.Tensor, yb: torch.Tensor, blocks: list[int] | None = None,
             measure: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Update `blocks` (default: all) on one batch: (per-block MSE, summed head CE, peak bytes held)."""
        blocks = blocks or list(range(1, self.model.T + 1))
        mses, ce, held_peak = [], torch.zeros((), device=self.device), 0
        for t in blocks:
            mse, held = self._block_step(t, xb, yb, measure)
            mses.append(mse)
            held_peak = max(held_peak, held)
            # as in the paper's Algorithm 1, every block update also updates the head and the
            # embeddings (their loss involves no block)
            ce += self._shared_step(yb)
        return torch.stack(mses), ce, held_peak

    def train_epoch(self, x, y, epoch, epochs, position=1):
        self.model.train()
        T = self.model.T
        mse_sum = torch.zeros(T, device=self.device)
        ce_sum = torch.zeros((), device=self.device)
        bs = self.train_cfg["batch_size"]
        n_batches = -(-x.shape[0] // bs)
        # interleaved: every block steps on every batch; blockwise (the paper's loop): block t sees the
        # whole dataset before block t+1 starts. Either way one epoch = every block saw every example once.
        passes = [list(range(1, T + 1))] if self.order == "interleaved" else [[t] for t in range(1, T + 1)]
        held_peak = 0
        seen = 0
        with self._progress(n_batches * len(passes), epoch, epochs, position) as bar:
            for blocks_in_pass in passes:
                for i, idx in enumerate(batches(x.shape[0], bs, self.generator)):
                    xb, yb = self._batch(x, y, idx)
                    measure = self.counted_peak_bytes is None and i == 0
                    mse, ce, held = self.step(xb, yb, blocks_in_pass, measure)
                    mse_sum[[t - 1 for t in blocks_in_pass]] += mse * yb.shape[0]
                    ce_sum += ce * yb.shape[0]
                    held_peak = max(held_peak, held)
                    seen += yb.shape[0] * len(blocks_in_pass)
                    if (i + 1) % SYNC_EVERY == 0:
                        self._check_nonfinite_blocks(mse_sum, epoch)
                        bar.set_postfix(ce=f"{ce_sum.item() / seen:.4f}")
                    bar.update(1)
        if self.counted_peak_bytes is None:
            # steady state: every block's optimizer state exists, one block's activations+grads are alive
            self.counted_peak_bytes = (self.param_bytes() + held_peak
                                       + optimizer_state_bytes(self.block_opts + [self.shared_opt]))
        self._check_nonfinite_blocks(mse_sum, epoch)
        mse = (mse_sum / (seen / T)).tolist()
        ce = ce_sum.item() / seen
        weights = self.model.weights.tolist()
        out = {"train_loss": sum(w * m for w, m in zip(weights, mse, strict=True)) + ce, "train_ce": ce}
        out.update({f"train_block_mse/{t:02d}": m for t, m in enumerate(mse, start=1)})
        return out

    def _check_nonfinite_blocks(self, mse_sum: torch.Tensor, epoch: int) -> None:
        bad = torch.nonzero(~torch.isfinite(mse_sum)).flatten()
        if bad.numel():
            raise NonFiniteLoss(f"{self.method}: non-finite loss in epoch {epoch}, block {int(bad[0]) + 1}")

    @torch.inference_mode()
    def evaluate(self, x, y, diagnostics=False):
        self.model.eval()
        return chain_metrics(self.model, self._chunks(x, y), self.device, self.precision, self.samples,
                             diagnostics, block_mse=True)


def chain_metrics(model: NoPropDT, chunks: Iterator[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                  precision: str, samples: int, diagnostics: bool, block_mse: bool) -> dict[str, float]:
    """Accuracy of the T-block chain and, with diagnostics, why it is what it is.

    acc: the paper's inference (z_0 ~ N(0, I), noise at every step), class probabilities averaged
    over `samples` noise draws. With diagnostics also: deterministic inference (no noise), accuracy
    after k = 1..T blocks (the model's readout after step k), the last block alone fed pure noise,
    per-block denoising MSE on z_{t−1} ~ q(z_{t−1} | y), and the head on the clean class embeddings.
    """
    T = model.T
    n = 0
    correct = torch.zeros((), device=device)
    det_correct = torch.zeros((), device=device)
    k_correct = torch.zeros(T, device=device)
    last_alone = torch.zeros((), device=device)
    mse = torch.zeros(T, device=device)
    for xb, yb in chunks:
        n += yb.shape[0]
        with autocast(device, precision):
            trace = model.trace(xb, noise=True)
            probs = torch.softmax(trace[-1], dim=1)
            for _ in range(samples - 1):
                probs += torch.softmax(model(xb, noise=True), dim=1)
            correct += (probs.argmax(1) == yb).sum()
            if not diagnostics:
                continue
            k_correct += torch.stack([(logits.argmax(1) == yb).sum() for logits in trace])
            det_correct += (model(xb, noise=False).argmax(1) == yb).sum()
            noise = model.initial_latent(xb.shape[0], True, xb)
            _, logits_last = model.blocks[-1](xb, noise, model.embed)
            last_alone += (logits_last.argmax(1) == yb).sum()
            if block_mse:
                mse += torch.stack([model.block_loss(t, xb, yb)[1] * yb.shape[0] for t in range(1, T + 1)])
    out = {"acc": correct.item() / n}
    if diagnostics:
        out["acc_deterministic"] = det_correct.item() / n
        out.update({f"acc_after_k/{k:02d}": v / n for k, v in enumerate(k_correct.tolist(), start=1)})
        out["last_block_from_noise_acc"] = last_alone.item() / n
        if block_mse:
            out.update({f"block_mse/{t:02d}": v / n for t, v in enumerate(mse.tolist(), start=1)})
        out.update(embedding_health(model))
    return out


def embedding_health(model: NoPropDT) -> dict[str, float]:
    """Class-embedding norms, their smallest pairwise distance (collapse) and the head on clean embeddings."""
    embed = model.embed.detach().float()
    norms = embed.norm(dim=1)
    dist = torch.cdist(embed, embed).fill_diagonal_(float("inf"))
    out = {"embed_norm_mean": norms.mean().item(), "embed_norm_min": norms.min().item(),
           "embed_min_pairwise_dist": dist.min().item()}
    if model.head is not None:  # backprop-blocks reads out block T's logits and has no head
        classes = torch.arange(embed.shape[0], device=embed.device)
        out["head_on_clean_acc"] = (model.head(embed).argmax(1) == classes).float().mean().item()
    return out
