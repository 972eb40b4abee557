"""The training-memory counter counts what a step holds, and NoProp-DT holds less than backprop-blocks."""
import torch
from torch import nn

from bench.memory import DevicePeak, SavedActivations, optimizer_state_bytes, tensor_bytes
from bench.training import build_engine, build_model
from tests.helpers import synthetic_splits, tiny_config


def test_saved_activations_match_a_hand_count():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20, bias=False), nn.ReLU(), nn.Linear(20, 5, bias=False))
    x = torch.randn(8, 10)
    with SavedActivations(model) as saved:
        model(x).sum().backward()
    # Linear 1 saves its input (8×10), ReLU its output (8×20), Linear 2 saves that same tensor again
    # (counted once); weights are parameters, not activations.
    assert saved.bytes == (8 * 10 + 8 * 20) * 4


def test_counter_excludes_parameters_and_counts_each_storage_once():
    w = nn.Parameter(torch.randn(4, 4))
    holder = nn.Module()
    holder.w = w
    x = torch.randn(3, 4, requires_grad=True)
    with SavedActivations(holder) as saved:
        (x @ w @ w).sum().backward()
    # saved: x (3×4) and x@w (3×4); w twice but excluded
    assert saved.bytes == 2 * 3 * 4 * 4


def test_optimizer_state_bytes():
    p = nn.Parameter(torch.zeros(100))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones(100)
    opt.step()
    # exp_avg + exp_avg_sq (100 floats each) + the step counter (one float32 scalar)
    assert optimizer_state_bytes([opt]) == 2 * 100 * 4 + 4
    assert tensor_bytes([p]) == 400


def test_noprop_training_peak_is_below_backprop_blocks():
    cfg = tiny_config(**{"noprop.T": 4})
    data = synthetic_splits()
    peaks = {}
    for method in ("noprop_dt", "backprop_blocks"):
        torch.manual_seed(0)
        engine = build_engine(method, build_model(method, cfg, data), cfg, torch.device("cpu"), "fp32", seed=0)
        engine.train_epoch(data.train_x, data.train_y, epoch=1, epochs=1)
        peaks[method] = engine.counted_peak_bytes
        params = engine.param_bytes()
        assert peaks[method] > 3 * params  # parameters + AdamW's two moments at least
    assert peaks["noprop_dt"] < peaks["backprop_blocks"]


def test_device_peak_reports_its_kind():
    peak = DevicePeak(torch.device("cpu"))
    peak.reset()
    assert peak.kind == "cpu_peak_rss"
    before = peak.peak_mb()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB touched
    block += 1
    assert peak.peak_mb() >= before + 60
