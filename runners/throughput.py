"""Throughput benchmark: images/s per method in plain eager fp32, lean fp32 and bf16, from one process.

    python -m runners.throughput --dataset mnist
    python -m runners.throughput --dataset mnist --time-to-accuracy 0.99 --data-mirror ../shared/datasets

Every variant is timed in the same process, one after another, on the same synthetic batch, so the
ratios compare like with like. `--time-to-accuracy` then trains NoProp-DT on the real training set
(validation images held out as in `runners.compare`) per precision and reports the training wall-clock
until the test accuracy first reaches the target (deterministic and noisy inference both reported).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

import pandas as pd
import torch

from bench import config as config_lib
from bench import data as data_lib
from bench.benchmarks.steps import make_step
from bench.hardware import autocast, describe, resolve_device, synchronize
from bench.training import build_engine, build_model, seed_everything
from runners.cli import HelpFormatter

VARIANTS = (("eager-fp32", "fp32", True), ("fp32", "fp32", False), ("bf16", "bf16", False))


def step_throughput(methods: list[str], dataset: str, device: torch.device, steps: int, batch: int,
                    variants: tuple = VARIANTS) -> pd.DataFrame:
    rows = []
    for method in methods:
        for name, precision, eager in variants:
            step = make_step(method, dataset, precision, device, eager=eager, batch=batch)
            for _ in range(2):  # warm-up
                step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            elapsed = time.perf_counter() - start
            rows.append({"method": method, "variant": name, "images_per_s": steps * batch / elapsed})
            print(f"{method:18s} {name:10s} {steps * batch / elapsed:9.0f} images/s", flush=True)
    df = pd.DataFrame(rows)
    eager = df[df["variant"] == "eager-fp32"].set_index("method")["images_per_s"]
    df["ratio_to_eager_fp32"] = df["images_per_s"] / df["method"].map(eager)
    return df


@torch.inference_mode()
def test_accuracy(model, x, y, device, precision, batch=1000, noise=True) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(y), batch):
        with autocast(device, precision):
            logits = model(x[start:start + batch].contiguous(memory_format=torch.channels_last
                                                             if precision == "bf16" else torch.contiguous_format),
                           noise=noise)
        correct += (logits.argmax(1) == y[start:start + batch]).sum().item()
    return correct / len(y)


def time_to_accuracy(target: float, precisions: list[str], max_epochs: int, device: torch.device,
                     data: data_lib.DataSplits, seed: int) -> pd.DataFrame:
    """Train NoProp-DT per precision; record per epoch the training wall-clock and test accuracy."""
    rows = []
    for precision in precisions:
        cfg = copy.deepcopy(config_lib.DEFAULTS)
        seed_everything(seed)
        engine = build_engine("noprop_dt", build_model("noprop_dt", cfg, data), cfg, device, precision, seed)
        train_time = 0.0
        for epoch in range(1, max_epochs + 1):
            synchronize(device)
            start = time.perf_counter()
            engine.train_epoch(data.train_x, data.train_y, epoch, max_epochs)
            synchronize(device)
            train_time += time.perf_counter() - start
            det = test_accuracy(engine.model, data.test_x, data.test_y, device, precision, noise=False)
            noisy = test_accuracy(engine.model, data.test_x, data.test_y, device, precision, noise=True)
            rows.append({"precision": precision, "epoch": epoch, "train_time_s": train_time,
                         "test_acc_deterministic": det, "test_acc": noisy})
            print(f"noprop_dt {precision}: epoch {epoch}, {train_time:.0f} s, test acc {noisy:.4f} "
                  f"(deterministic {det:.4f})", flush=True)
            if det >= target and noisy >= target:
                break
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runners.throughput", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--dataset", choices=data_lib.DATASETS, default="mnist", help="input shape to benchmark")
    p.add_argument("--methods", nargs="+", choices=config_lib.METHODS, default=list(config_lib.METHODS))
    p.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    p.add_argument("--batch", type=int, default=128, help="batch size")
    p.add_argument("--device", choices=config_lib.DEVICES, default="auto")
    p.add_argument("--time-to-accuracy", type=float, default=None, metavar="ACC",
                   help="also train NoProp-DT on real data until test accuracy reaches ACC (e.g. 0.99)")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["bf16", "fp32"],
                   help="precisions for --time-to-accuracy")
    p.add_argument("--max-epochs", type=int, default=3, help="epoch limit for --time-to-accuracy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="dataset root (default: $NOPROP_DATA_DIR or ./data)")
    p.add_argument("--data-mirror", default=None, help="offline mirror (default: $NOPROP_DATA_MIRROR)")
    p.add_argument("--csv", default=None, help="also write the tables to this CSV prefix")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 2 or args.max_epochs < 1:
        p.error("--steps >= 1, --batch >= 2 and --max-epochs >= 1 are required")
    device = resolve_device(args.device)
    print("machine:", describe(device))
    table = step_throughput(args.methods, args.dataset, device, args.steps, args.batch)
    print()
    print(table.to_markdown(index=False, floatfmt=".2f"))
    if args.csv:
        table.to_csv(f"{args.csv}_steps.csv", index=False)
    if args.time_to_accuracy is not None:
        try:
            data = data_lib.load_splits(args.dataset, data_lib.resolve_data_dir(args.data_dir),
                                        data_lib.resolve_mirror(args.data_mirror),
                                        val_size=config_lib.DEFAULTS["data"]["val_size"], device=device)
        except data_lib.DataError as err:
            p.exit(2, f"{p.prog}: data error: {err}\n")
        curve = time_to_accuracy(args.time_to_accuracy, args.precisions, args.max_epochs, device, data, args.seed)
        print()
        print(curve.to_markdown(index=False, floatfmt=".4f"))
        if args.csv:
            curve.to_csv(f"{args.csv}_time_to_accuracy.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
