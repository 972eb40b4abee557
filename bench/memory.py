"""Peak memory, measured so that it means something.

Two figures, never mixed up:
- the *device* peak: on CUDA the allocator's `max_memory_allocated` (reset between phases); on CPU
  the process's peak RSS (VmHWM, reset through /proc/self/clear_refs where Linux allows). The kind
  is always reported next to the number.
- the *counted training peak*: parameters + gradients + optimizer state + the activations autograd
  saves for backward, counted with `saved_tensors_hooks`. It reflects what a training step holds,
  not the dataset tensors or the interpreter, and is the same on every device.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from bench.hardware import release_freed_memory

CUDA_KIND = "cuda_max_allocated"
RSS_KIND = "cpu_peak_rss"


def _read_hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class DevicePeak:
    """Peak memory of one phase on the training device, with its kind."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = CUDA_KIND if device.type == "cuda" else RSS_KIND
        self.rss_reset = False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        release_freed_memory()  # memory a previous phase freed but kept mapped must not count here
        try:  # "5" resets the peak RSS counter (Linux >= 4.0); elsewhere the peak is process-wide
            Path("/proc/self/clear_refs").write_text("5")
            self.rss_reset = True
        except OSError:
            self.rss_reset = False

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = _read_hwm_bytes()
        if hwm is None:
            import resource

            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return hwm / 2**20


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_state_bytes(optimizers: Iterable[torch.optim.Optimizer]) -> int:
    return sum(
        tensor_bytes(v for v in state.values() if torch.is_tensor(v))
        for opt in optimizers
        for state in opt.state.values()
    )


class SavedActivations:
    """Counts the bytes autograd saves for backward inside the context (each storage once).

    Parameters and buffers saved by an op are not activations and are excluded: they are
    counted once as parameters.
    """

    def __init__(self, module: nn.Module):
        self.excluded = {t.untyped_storage().data_ptr() for t in list(module.parameters()) + list(module.buffers())}
        self.seen: set[int] = set()
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.excluded and ptr not in self.seen:
            self.seen.add(ptr)
            self.bytes += storage.nbytes()
        return t

    def __enter__(self) -> SavedActivations:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
