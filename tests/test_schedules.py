"""The noise schedule points the paper's way: z_0 noisy, z_T clean, every loss weight positive."""
import math

import pytest
import torch

from bench import schedules
from bench.schedules import ScheduleError, make_schedule

FAMILY_KW = {"cosine": {}, "linear_logsnr": {}, "sigmoid": {"steepness": 4.0}}


@pytest.mark.parametrize("family", schedules.FAMILIES)
@pytest.mark.parametrize("T", [1, 3, 10, 50])
def test_snr_strictly_increases_and_weights_positive(family, T):
    s = make_schedule(T, 0.1, family, **FAMILY_KW[family])
    assert s.alpha_bar.shape == (T + 1,)
    assert torch.all(s.snr[1:] > s.snr[:-1]), "SNR must rise with the block index"
    assert torch.all(s.weights > 0)
    assert torch.isfinite(s.snr).all()
    # z_0 is (nearly) pure noise, z_T (nearly) clean
    assert s.alpha_bar[0] < 0.05 and s.alpha_bar[-1] > 0.95


def test_loss_weight_formula():
    s = make_schedule(10, 0.1)
    snr = s.alpha_bar / (1 - s.alpha_bar)
    for t in range(1, 11):
        assert s.weights[t - 1].item() == pytest.approx(0.1 * 10 / 2 * (snr[t] - snr[t - 1]).item())


@pytest.mark.parametrize("family", schedules.FAMILIES)
def test_ends_are_clamped_so_snr_is_finite(family):
    s = make_schedule(10, 0.1, family, s=0.0, alpha_min=1e-3, snr_max=100.0)
    assert s.alpha_bar[0].item() == pytest.approx(1e-3)
    assert s.snr[-1].item() == pytest.approx(100.0)


def test_ddpm_direction_is_refused():
    """The common bug: ᾱ decreasing with t. Its weights are negative, so validation must fail."""
    good = make_schedule(10, 0.1).alpha_bar
    reversed_schedule = good.flip(0)
    assert (schedules.loss_weights(reversed_schedule, 0.1) < 0).all()
    with pytest.raises(ScheduleError, match="strictly increase"):
        schedules.validate(reversed_schedule, 0.1)


def test_forced_negative_weight_is_refused():
    with pytest.raises(ScheduleError, match="eta must be positive"):
        schedules.validate(make_schedule(5, 0.1).alpha_bar, -0.1)


@pytest.mark.parametrize("family", schedules.FAMILIES)
def test_crossed_ends_are_refused(family):
    # the noisiest level above the cleanest cap (SNR 10 → ᾱ ≈ 0.91) would run the schedule backwards
    with pytest.raises(ScheduleError, match="strictly increase"):
        make_schedule(10, 0.1, family, alpha_min=0.95, snr_max=10.0)


@pytest.mark.parametrize("bad", [dict(family="nope"), dict(alpha_min=0.0), dict(alpha_min=1.0), dict(snr_max=-1.0)])
def test_invalid_arguments(bad):
    with pytest.raises(ScheduleError):
        make_schedule(10, 0.1, **bad)


def test_inference_coefficients_are_the_forward_posterior():
    """z_t = a·u + b·z_{t−1} + √c·ε must have the marginal q(z_t | u) when z_{t−1} ~ q(z_{t−1} | u)."""
    s = make_schedule(10, 0.1)
    ab = s.alpha_bar
    for t in range(1, 11):
        a, b, c = s.a[t - 1], s.b[t - 1], s.c[t - 1]
        prev, cur = ab[t - 1], ab[t]
        mean_coef = a + b * prev.sqrt()  # coefficient of u in E[z_t]
        var = b**2 * (1 - prev) + c
        assert mean_coef.item() == pytest.approx(cur.sqrt().item(), rel=1e-9)
        assert var.item() == pytest.approx((1 - cur).item(), rel=1e-9)
        assert c.item() >= 0


def test_posterior_matches_monte_carlo():
    """Sampling the chain with the true u_y ends at q(z_T | y): mean √ᾱ_T·u, variance 1 − ᾱ_T."""
    torch.manual_seed(0)
    s = make_schedule(6, 0.1, "linear_logsnr", alpha_min=0.01, snr_max=50.0)
    u = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    z = torch.randn(200_000, 3, dtype=torch.float64) * math.sqrt(1 - s.alpha_bar[0]) + s.alpha_bar[0].sqrt() * u
    for t in range(1, 7):
        z = s.a[t - 1] * u + s.b[t - 1] * z + s.c[t - 1].sqrt() * torch.randn_like(z)
    assert torch.allclose(z.mean(0), s.alpha_bar[-1].sqrt() * u, atol=0.01)
    assert torch.allclose(z.var(0), (1 - s.alpha_bar[-1]).expand(3), atol=0.01)
