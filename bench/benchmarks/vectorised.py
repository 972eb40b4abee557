"""Would training NoProp-DT's T blocks as one vectorised model be faster? A side-by-side probe.

    python -m bench.benchmarks.vectorised            # CPU; --device cuda on a GPU

Issue 6 asks to consider `torch.func.stack_module_state` + `vmap` for the T independent block updates
of one mini-batch, and to keep it only if it is faster and computes the same thing. This probe times,
in one process on the same batch, the block part of one interleaved NoProp-DT step (T block losses,
backward, AdamW) three ways:

- `loop`: the T blocks one after another, as `NoPropEngine` does (the model's own fused ReLU+dropout);
- `loop-std-dropout`: the same loop with plain `nn.ReLU` + `nn.Dropout`, the only dropout `vmap` can batch;
- `vmap`: all T blocks in one `vmap`-ed call over stacked parameters (plain dropout, a different mask per
  block), one fused AdamW over the stacked parameters (AdamW is elementwise, so this is the same update).

Before timing, it checks that `vmap` computes the loop's losses and gradients (dropout off, fp32).
"""
from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bench import config as config_lib
from bench.benchmarks.steps import synthetic_batch
from bench.hardware import autocast, cpu_has_native_bf16, resolve_device
from bench.training import build_model
from models.encoders import ReLUDropout
from models.noprop import NoPropDT


def with_standard_dropout(module: nn.Module, p: float | None = None) -> nn.Module:
    """Replace every fused ReLUDropout by nn.ReLU + nn.Dropout (probability p, default the module's own)."""
    for name, child in module.named_children():
        if isinstance(child, ReLUDropout):
            setattr(module, name, nn.Sequential(nn.ReLU(), nn.Dropout(child.p if p is None else p)))
        else:
            with_standard_dropout(child, p)
    return module


def _model(T: int, batch: int, device: torch.device) -> tuple[NoPropDT, torch.Tensor, torch.Tensor]:
    cfg = copy.deepcopy(config_lib.DEFAULTS)
    cfg["noprop"]["T"] = T
    data = synthetic_batch("mnist", batch, device)
    torch.manual_seed(0)
    return build_model("noprop_dt", cfg, data).to(device).train(), data.train_x, data.train_y


def loop_step(model: NoPropDT, x: torch.Tensor, y: torch.Tensor, device: torch.device,
              precision: str) -> Callable[[], torch.Tensor]:
    """T block updates one after another, each with its own fused AdamW (the engine's interleaved step)."""
    opts = [torch.optim.AdamW(b.parameters(), lr=1e-3, weight_decay=1e-3, fused=True) for b in model.blocks]

    def step() -> torch.Tensor:
        losses = []
        for t, opt in enumerate(opts, start=1):
            with autocast(device, precision):
                weighted, mse = model.block_loss(t, x, y)
            weighted.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(mse.detach())
        return torch.stack(losses)

    return step


def stacked_block_loss(model: NoPropDT, x: torch.Tensor, y: torch.Tensor) -> Callable:
    """(stacked params, stacked buffers, z of shape [T, B, d]) -> the T unweighted block MSEs, in one vmap."""
    template = copy.deepcopy(model.blocks[0]).to("meta")
    embed = model.embed

    def one_block(params: dict, buffers: dict, z: torch.Tensor) -> torch.Tensor:
        u_hat, _ = functional_call(template, (params, buffers), (x, z, embed))
        return (u_hat - embed[y].float()).pow(2).sum(dim=1).mean()

    return vmap(one_block, randomness="different")


def stacked_state(model: NoPropDT) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params, buffers = stack_module_state(list(model.blocks))
    return {k: v.detach().requires_grad_() for k, v in params.items()}, buffers


def latents(model: NoPropDT, y: torch.Tensor) -> torch.Tensor:
    """z_{t−1} ~ q(z_{t−1} | y) for t = 1..T, stacked: each block's training input."""
    return torch.stack([model.sample_latent(y, t - 1) for t in range(1, model.T + 1)])


def vmap_step(model: NoPropDT, x: torch.Tensor, y: torch.Tensor, device: torch.device,
              precision: str) -> Callable[[], torch.Tensor]:
    """All T block losses in one vmap over stacked block parameters; one AdamW over the stacked tensors."""
    params, buffers = stacked_state(model)
    loss = stacked_block_loss(model, x, y)
    opt = torch.optim.AdamW(params.values(), lr=1e-3, weight_decay=1e-3, fused=True)

    def step() -> torch.Tensor:
        with autocast(device, precision):
            mse = loss(params, buffers, latents(model, y))
        (model.weights * mse).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return mse.detach()

    return step


def check_same_function(T: int, batch: int, device: torch.device) -> float:
    """Largest relative gap between the loop's and vmap's losses and gradients (dropout off, fp32, same z)."""
    model, x, y = _model(T, batch, device)
    with_standard_dropout(model, p=0.0)
    params, buffers = stacked_state(model)
    z = latents(model, y)
    mse_v = stacked_block_loss(model, x, y)(params, buffers, z)
    mse_v.sum().backward()
    gaps = []
    for t, block in enumerate(model.blocks, start=1):
        u_hat, _ = block(x, z[t - 1], model.embed)
        mse = (u_hat - model.embed[y]).pow(2).sum(dim=1).mean()
        mse.backward()
        gaps.append(((mse_v[t - 1] - mse).abs() / mse.abs()).item())
        # gradients relative to the block's largest one: biases ahead of BatchNorm have ~0 gradient
        scale = max(p.grad.abs().max().item() for p in block.parameters())
        for name, p in block.named_parameters():
            gaps.append((p.grad - params[name].grad[t - 1]).abs().max().item() / scale)
    return max(gaps)


def images_per_s(step: Callable[[], torch.Tensor], batch: int, steps: int, device: torch.device) -> float:
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.benchmarks.vectorised", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=None,
                   help="default: bf16 where native, and fp32")
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    precisions = args.precisions or (["bf16"] if device.type == "cuda" or cpu_has_native_bf16() else []) + ["fp32"]
    gap = check_same_function(args.T, args.batch, device)
    print(f"vmap vs loop, dropout off, fp32: largest relative gap in losses and gradients {gap:.2e}")
    for precision in precisions:
        rates = {}
        for variant in ("loop", "loop-std-dropout", "vmap"):
            model, x, y = _model(args.T, args.batch, device)
            if variant != "loop":
                with_standard_dropout(model)
            if variant == "vmap":
                step = vmap_step(model, x, y, device, precision)
            else:
                step = loop_step(model, x, y, device, precision)
            rates[variant] = images_per_s(step, args.batch, args.steps, device)
        base = rates["loop"]
        for variant, rate in rates.items():
            print(f"{precision:5s} {variant:17s} {rate:8.1f} images/s  ({rate / base:.2f}× the loop)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
