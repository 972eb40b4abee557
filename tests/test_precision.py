"""Precision: 'auto' picks bf16 only where the hardware runs it natively; every precision trains finitely."""
import pytest
import torch

from bench import hardware
from bench.training import build_engine, build_model
from tests.helpers import synthetic_splits, tiny_config


def test_auto_selects_bf16_on_a_cpu_with_native_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert hardware.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert hardware.resolve_precision("auto", torch.device("cpu")) == "bf16"


def test_auto_selects_fp32_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})
    assert hardware.resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_explicit_precision_is_kept():
    assert hardware.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert hardware.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_this_machine_reads_its_flags():
    flags = hardware.cpu_flags()
    assert hardware.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_cuda_request_without_cuda_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(hardware.DeviceError, match="no CUDA"):
        hardware.resolve_device("cuda")
    assert hardware.resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", ["noprop_dt", "backprop_cnn", "backprop_blocks"])
def test_each_precision_trains_finitely_with_the_same_output_shape(method, precision):
    cfg = tiny_config()
    data = synthetic_splits()
    engine = build_engine(method, build_model(method, cfg, data), cfg, torch.device("cpu"), precision, seed=0)
    metrics = engine.train_epoch(data.train_x, data.train_y, epoch=1, epochs=1)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    engine.model.eval()
    with torch.no_grad(), hardware.autocast(torch.device("cpu"), precision):
        logits = engine.model(data.val_x.contiguous(memory_format=engine.memory_format))
    assert logits.shape == (len(data.val_y), 10)
    # master weights stay fp32 under autocast
    assert all(p.dtype == torch.float32 for p in engine.model.parameters())


@pytest.mark.skipif(not hardware.keep_freed_memory_mapped(), reason="needs glibc (Linux)")
def test_freed_tensor_memory_is_reused_without_page_faults():
    """A training step reallocates the same activation sizes; after the first, they must not fault again."""
    import resource

    def faults_for_one_buffer() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(8 << 20)  # 32 MiB, allocated, touched, freed
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_for_one_buffer()
    # a fresh 32 MiB mapping would take 8,192 page faults of 4 KiB
    assert faults_for_one_buffer() < 500


def test_vmap_probe_computes_what_the_per_block_loop_computes():
    """The vectorised-blocks benchmark only means something if vmap trains the same function as the loop."""
    from bench.benchmarks.vectorised import check_same_function

    assert check_same_function(T=3, batch=8, device=torch.device("cpu")) < 1e-4
