"""NoProp-DT noise schedules as small pure functions.

Convention (the paper's, arXiv 2503.24322): index t runs 0..T over the latent chain z_0 → z_T.
z_0 is (almost) pure noise and z_T (almost) the clean label embedding, so the signal level
ᾱ_t, and with it SNR(t) = ᾱ_t / (1 − ᾱ_t), must *increase* with t. Many public re-implementations
use the DDPM direction (ᾱ decreasing), which makes the loss weights SNR(t) − SNR(t−1) negative:
nine of ten blocks then do gradient ascent. `validate` refuses such a schedule.

Block t (1..T) maps (x, z_{t−1}) to an estimate û_t of the clean embedding; it is trained on
z_{t−1} ~ q(z_{t−1} | y) with weight η·(T/2)·(SNR(t) − SNR(t−1)). At inference
z_t = a_t·û_t + b_t·z_{t−1} + √c_t·ε, the Gaussian posterior q(z_t | z_{t−1}, u_y) with û_t in
place of u_y, so block t is used at inference with exactly the ᾱ_{t−1} it was trained on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FAMILIES = ("cosine", "linear_logsnr", "sigmoid")


class ScheduleError(ValueError):
    """A schedule that would not train NoProp-DT correctly."""


def cosine_signal(T: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ_t = cos²(π/2 · (1 − t/T + s)/(1 + s)): 0 at t=0, ≈1 at t=T (before clamping)."""
    t = torch.arange(T + 1, dtype=torch.float64)
    return torch.cos(0.5 * math.pi * (1 - t / T + s) / (1 + s)) ** 2


def linear_logsnr_signal(T: int, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    """log SNR rises linearly from logsnr_min (z_0) to logsnr_max (z_T)."""
    t = torch.arange(T + 1, dtype=torch.float64)
    return torch.sigmoid(logsnr_min + (logsnr_max - logsnr_min) * t / T)


def sigmoid_signal(T: int, alpha_start: float, alpha_end: float, steepness: float = 6.0) -> torch.Tensor:
    """ᾱ follows a logistic S-curve in t/T, rescaled to run from alpha_start to alpha_end."""
    t = torch.arange(T + 1, dtype=torch.float64)
    curve = torch.sigmoid(steepness * (t / T - 0.5))
    lo, hi = 1 / (1 + math.exp(steepness / 2)), 1 / (1 + math.exp(-steepness / 2))
    return alpha_start + (alpha_end - alpha_start) * (curve - lo) / (hi - lo)


def snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    return alpha_bar / (1 - alpha_bar)


def loss_weights(alpha_bar: torch.Tensor, eta: float) -> torch.Tensor:
    """η·(T/2)·(SNR(t) − SNR(t−1)) for t = 1..T: the weight of block t's denoising loss."""
    T = alpha_bar.numel() - 1
    s = snr(alpha_bar)
    return eta * (T / 2) * (s[1:] - s[:-1])


def inference_coefficients(alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a_t, b_t, c_t) for t = 1..T of the posterior q(z_t | z_{t−1}, u).

    With α_t = ᾱ_{t−1}/ᾱ_t (the step from the cleaner z_t to the noisier z_{t−1}):
    a_t = √ᾱ_t (1−α_t)/(1−ᾱ_{t−1}), b_t = √α_t (1−ᾱ_t)/(1−ᾱ_{t−1}), c_t = (1−ᾱ_t)(1−α_t)/(1−ᾱ_{t−1}).
    """
    prev, cur = alpha_bar[:-1], alpha_bar[1:]
    step = prev / cur
    a = cur.sqrt() * (1 - step) / (1 - prev)
    b = step.sqrt() * (1 - cur) / (1 - prev)
    c = (1 - cur) * (1 - step) / (1 - prev)
    return a, b, c


def validate(alpha_bar: torch.Tensor, eta: float) -> None:
    """Raise ScheduleError unless the schedule is one NoProp-DT can be trained with."""
    if alpha_bar.ndim != 1 or alpha_bar.numel() < 2:
        raise ScheduleError("a schedule needs signal levels for t = 0..T with T >= 1")
    if not torch.isfinite(alpha_bar).all() or (alpha_bar <= 0).any() or (alpha_bar >= 1).any():
        raise ScheduleError(f"signal levels must lie strictly between 0 and 1, got {alpha_bar.tolist()}")
    s = snr(alpha_bar)
    bad = torch.nonzero(s[1:] <= s[:-1]).flatten()
    if bad.numel():
        t = int(bad[0]) + 1
        raise ScheduleError(
            f"SNR must strictly increase with the block index (z_0 noisy, z_T clean); "
            f"SNR({t}) = {s[t]:.4g} <= SNR({t - 1}) = {s[t - 1]:.4g}"
        )
    if eta <= 0:
        raise ScheduleError(f"eta must be positive, got {eta}")
    w = loss_weights(alpha_bar, eta)
    if not torch.isfinite(w).all() or (w <= 0).any():
        raise ScheduleError(f"every block's loss weight must be positive and finite, got {w.tolist()}")


@dataclass(frozen=True)
class Schedule:
    """Everything training and inference need, computed once in float64."""

    alpha_bar: torch.Tensor  # (T+1,) signal level of z_0..z_T
    weights: torch.Tensor  # (T,) loss weight of blocks 1..T
    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor

    @property
    def T(self) -> int:
        return self.weights.numel()

    @property
    def snr(self) -> torch.Tensor:
        return snr(self.alpha_bar)


def make_schedule(
    T: int,
    eta: float,
    family: str = "cosine",
    *,
    s: float = 0.008,
    alpha_min: float = 1e-3,
    snr_max: float = 1e4,
    steepness: float = 6.0,
) -> Schedule:
    """Build and validate a schedule whose ends are clamped so every SNR stays finite.

    alpha_min is the signal level of the noisiest latent z_0 and snr_max caps the cleanest z_T.
    The cosine curve (0 at t=0, ≈1 at t=T) is mapped affinely onto [alpha_min, snr_max/(1+snr_max)],
    which keeps it strictly increasing for any T; the other two families run between the same ends.
    Ends that cross (alpha_min above the cap) give a decreasing schedule, which `validate` refuses.
    """
    if T < 1:
        raise ScheduleError(f"T must be >= 1, got {T}")
    if not 0 < alpha_min < 1:
        raise ScheduleError(f"alpha_min must lie in (0, 1), got {alpha_min}")
    if snr_max <= 0:
        raise ScheduleError(f"snr_max must be positive, got {snr_max}")
    alpha_max = snr_max / (1 + snr_max)
    if family == "cosine":
        alpha_bar = alpha_min + (alpha_max - alpha_min) * cosine_signal(T, s)
    elif family == "linear_logsnr":
        alpha_bar = linear_logsnr_signal(T, math.log(alpha_min / (1 - alpha_min)), math.log(snr_max))
    elif family == "sigmoid":
        alpha_bar = sigmoid_signal(T, alpha_min, alpha_max, steepness)
    else:
        raise ScheduleError(f"unknown schedule family {family!r}; choose from {', '.join(FAMILIES)}")
    validate(alpha_bar, eta)
    a, b, c = inference_coefficients(alpha_bar)
    return Schedule(alpha_bar, loss_weights(alpha_bar, eta), a, b, c)
