"""pytest-benchmark micro-benchmarks: one training step per method and precision (CPU, and CUDA if present).

    pytest bench/ --benchmark-only

Compare the `eager-fp32` row of a method (plain PyTorch step) with its `fp32` and `bf16` rows.
"""
import pytest
import torch

from bench.benchmarks.steps import make_step
from bench.config import METHODS
from bench.hardware import cpu_has_native_bf16

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
VARIANTS = ["eager-fp32", "fp32", "bf16"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("method", METHODS)
def test_train_step(benchmark, method, variant, device):
    dev = torch.device(device)
    if variant == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: autocast would be emulated")
    precision = "bf16" if variant == "bf16" else "fp32"
    step = make_step(method, "mnist", precision, dev, eager=variant == "eager-fp32")
    step()  # warm-up: allocator, oneDNN primitives
    benchmark.extra_info.update(method=method, variant=variant, images_per_step=128)
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
