"""CheapDropout must be dropout: the right drop rate, the right scaling, the same mask in backward."""
import pytest
import torch

from models.encoders import CheapDropout


def test_drops_a_fraction_p_and_scales_the_survivors():
    x = torch.ones(64, 32, 28, 28)
    y = CheapDropout(0.2).train()(x)
    dropped = (y == 0).float().mean().item()
    # 1.6 M elements: the standard error of the rate is 3e-4, so 0.005 is a 15-sigma band
    assert abs(dropped - 0.2) < 0.005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.8))


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_every_16_bit_lane_drops_at_rate_p(p):
    """The mask cuts each 64-bit draw into four lanes; none of them may be biased."""
    y = CheapDropout(p).train()(torch.ones(4 * 100_000))
    for lane in range(4):
        rate = (y[lane::4] == 0).float().mean().item()
        assert abs(rate - p) < 0.01, (lane, rate)


def test_backward_uses_the_forward_mask():
    x = torch.randn(8, 4, 6, 6, requires_grad=True)
    y = CheapDropout(0.3).train()(x)
    y.sum().backward()
    expected = (y != 0).float() / 0.7
    assert torch.allclose(x.grad, expected)


def test_channels_last_stays_channels_last_with_a_consistent_mask():
    x = torch.randn(4, 8, 5, 5).to(memory_format=torch.channels_last)
    y = CheapDropout(0.5).train()(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] * 2)


def test_non_contiguous_input_works():
    x = torch.randn(6, 10).t()
    y = CheapDropout(0.5).train()(x)
    kept = y != 0
    assert y.shape == x.shape and torch.allclose(y[kept], x[kept] * 2)


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(3, 4, 5, 5)
    assert torch.equal(CheapDropout(0.4).eval()(x), x)
    assert torch.equal(CheapDropout(0.0).train()(x), x)


def test_same_seed_same_mask():
    x = torch.ones(1000)
    torch.manual_seed(7)
    a = CheapDropout(0.3).train()(x)
    torch.manual_seed(7)
    b = CheapDropout(0.3).train()(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_invalid_probability_is_an_error(p):
    with pytest.raises(ValueError, match="dropout probability"):
        CheapDropout(p)
