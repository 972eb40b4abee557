"""ReLUDropout must be ReLU then dropout: the right drop rate, the right scaling, the same mask in backward."""
import pytest
import torch

from models.encoders import ReLUDropout


def test_drops_a_fraction_p_and_scales_the_survivors():
    x = torch.ones(64, 32, 28, 28)
    y = ReLUDropout(0.2).train()(x)
    dropped = (y == 0).float().mean().item()
    # 1.6 M elements: the standard error of the rate is 3e-4, so 0.005 is a 15-sigma band
    assert abs(dropped - 0.2) < 0.005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.8))


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_every_16_bit_lane_drops_at_rate_p(p):
    """The mask cuts each 64-bit draw into four lanes; none of them may be biased."""
    y = ReLUDropout(p).train()(torch.ones(4 * 100_000))
    for lane in range(4):
        rate = (y[lane::4] == 0).float().mean().item()
        assert abs(rate - p) < 0.01, (lane, rate)


def test_backward_uses_the_forward_mask():
    x = torch.randn(8, 4, 6, 6, requires_grad=True)
    y = ReLUDropout(0.3).train()(x)
    y.sum().backward()
    expected = (y != 0).float() / 0.7
    assert torch.allclose(x.grad, expected)


def test_is_relu_then_dropout_values_and_gradients():
    """Negative inputs are zeroed with zero gradient; kept positive ones are scaled, dropped ones are 0."""
    x = torch.randn(16, 8, 6, 6, requires_grad=True)
    y = ReLUDropout(0.25).train()(x)
    y.backward(torch.full_like(y, 3.0))
    negative, kept = x.detach() <= 0, y.detach() != 0
    assert torch.equal(y.detach()[negative], torch.zeros(int(negative.sum())))
    assert torch.equal(x.grad[negative], torch.zeros(int(negative.sum())))
    assert torch.allclose(y.detach()[kept], x.detach()[kept] / 0.75)
    assert torch.allclose(x.grad[kept], torch.full((int(kept.sum()),), 3.0 / 0.75))
    dropped_positive = ~negative & ~kept
    assert torch.equal(x.grad[dropped_positive], torch.zeros(int(dropped_positive.sum())))
    # about a quarter of the positive inputs is dropped
    assert abs(dropped_positive.sum().item() / (~negative).sum().item() - 0.25) < 0.05


def test_bf16_input_keeps_its_dtype_and_is_relu_then_dropout():
    x = torch.randn(32, 16, 8, 8).bfloat16().to(memory_format=torch.channels_last)
    y = ReLUDropout(0.2).train()(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    kept = y != 0
    assert bool((x[kept] > 0).all())
    assert torch.equal(y[kept], (x[kept].float() * 1.25).bfloat16())


def test_channels_last_stays_channels_last_with_a_consistent_mask():
    x = torch.rand(4, 8, 5, 5).add_(0.1).to(memory_format=torch.channels_last)
    y = ReLUDropout(0.5).train()(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] * 2)


def test_non_contiguous_input_works():
    x = torch.rand(6, 10).add_(0.1).t()
    y = ReLUDropout(0.5).train()(x)
    kept = y != 0
    assert y.shape == x.shape and torch.allclose(y[kept], x[kept] * 2)


def test_eval_mode_and_p_zero_are_plain_relu():
    x = torch.randn(3, 4, 5, 5)
    assert torch.equal(ReLUDropout(0.4).eval()(x), torch.relu(x))
    assert torch.equal(ReLUDropout(0.0).train()(x), torch.relu(x))


def test_same_seed_same_mask():
    x = torch.ones(1000)
    torch.manual_seed(7)
    a = ReLUDropout(0.3).train()(x)
    torch.manual_seed(7)
    b = ReLUDropout(0.3).train()(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_invalid_probability_is_an_error(p):
    with pytest.raises(ValueError, match="dropout probability"):
        ReLUDropout(p)


def test_conv_stage_pools_before_relu_with_identical_values_and_gradients():
    from torch import nn

    from models.encoders import conv_stage

    torch.manual_seed(0)
    stage = conv_stage(3, 8, dropout=0.0)
    conv, bn = stage[0], stage[1]
    reference = nn.Sequential(conv, bn, nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.0))
    x = torch.randn(4, 3, 10, 10)
    grads = []
    for net in (stage, reference):
        net.zero_grad()
        out = net(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), conv.weight.grad.clone(), bn.weight.grad.clone()))
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
