"""Device, precision and machine description: everything that depends on the hardware."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
from pathlib import Path

import torch


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was requested but no CUDA device is available")
    return torch.device(requested)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """bf16 pays on a CPU only with native instructions (AVX512-BF16 or AMX); emulated it is slower."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_precision(requested: str, device: torch.device) -> str:
    """'auto' → bf16 where the hardware runs it natively, else fp32."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; weights, optimizer state and losses stay fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@functools.cache
def keep_freed_memory_mapped() -> bool:
    """Stop glibc from returning freed tensor memory to the OS between training steps (CPU, Linux).

    By default glibc serves large blocks with mmap and trims the heap on free, so every step's activation
    buffers come back as fresh pages: 63,000 page faults per NoProp-DT step here, a quarter of its time.
    Raising both thresholds to 1 GiB keeps the pages mapped (157 faults per step). The process then keeps
    freed memory until `release_freed_memory` hands it back, which `DevicePeak.reset` does so that one
    phase's peak RSS does not carry another's. Returns whether the setting took (False off glibc).
    """
    libc = _libc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold, one_gib = -1, -3, 1 << 30
    return bool(libc.mallopt(m_mmap_threshold, one_gib)) and bool(libc.mallopt(m_trim_threshold, one_gib))


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (glibc `malloc_trim`); a no-op off glibc."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> dict[str, str]:
    """A short, loggable description of the machine the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "device": device.type,
        "cpu": cpu,
        "cpu_cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
        "bf16_native_cpu": str(cpu_has_native_bf16()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gb"] = f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.1f}"
    return info
