"""Compare NoProp-DT (with and without decoder) against backprop baselines on real MNIST or CIFAR-10.

    python -m runners.compare --dataset mnist
    python -m runners.compare --dataset cifar10 --quick --data-mirror ../shared/datasets

One MLflow parent run per invocation, one child run per method and seed, and a comparison table
(printed, and logged as CSV and Markdown artifacts of the parent run).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench import config as config_lib
from bench import data as data_lib
from bench import tracking
from bench.engines import NonFiniteLoss
from bench.hardware import DeviceError, resolve_device, resolve_precision
from runners.cli import HelpFormatter

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class IncompleteComparison(RuntimeError):
    """Some method failed; the parent run is marked FAILED and the command exits 1."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runners.compare",
        description="Train NoProp-DT and backprop baselines side by side, track them in MLflow, print a table.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--dataset", required=True, choices=data_lib.DATASETS, help="which real dataset to use")
    p.add_argument("--config", type=Path, default=None,
                   help="experiment YAML (default: configs/<dataset>.yaml)")
    p.add_argument("--methods", nargs="+", choices=config_lib.METHODS, default=None,
                   help="methods to run (default: the config's list)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per method (default: config)")
    p.add_argument("--seed", type=int, default=None, help="first seed (default: config)")
    p.add_argument("--seeds", type=int, default=None,
                   help="repeat each method over this many seeds (seed, seed+1, ...); tables show mean ± s.e.")
    p.add_argument("--device", choices=config_lib.DEVICES, default=None,
                   help="training device; auto = CUDA when present (default: config)")
    p.add_argument("--precision", choices=config_lib.PRECISIONS, default=None,
                   help="fp32, bf16 autocast, or auto = bf16 where the hardware runs it natively (default: config)")
    p.add_argument("--data-dir", default=None,
                   help="dataset root (default: $NOPROP_DATA_DIR or ./data)")
    p.add_argument("--data-mirror", default=None,
                   help="offline folder with the official download files and SHA256SUMS, installed into "
                        "--data-dir after a checksum check (default: $NOPROP_DATA_MIRROR)")
    p.add_argument("--tracking-uri", default=None,
                   help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or {tracking.DEFAULT_URI})")
    p.add_argument("--quick", action="store_true",
                   help="a few minutes on a laptop CPU: the config's quick epochs on a subset of the real data")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set noprop.T=5 --set train.lr=3e-4")
    return p


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Config file ← --set overrides ← explicit flags ← --quick, validated once at the end."""
    path = args.config or CONFIG_DIR / f"{args.dataset}.yaml"
    overrides = dict(config_lib.parse_override(o) for o in args.overrides)
    cfg = config_lib.load(path, overrides)
    cfg["dataset"] = args.dataset
    flags = {"methods": args.methods, "seed": args.seed, "seeds": args.seeds, "device": args.device,
             "precision": args.precision, "train.epochs": args.epochs}
    for key, value in flags.items():
        if value is not None:
            config_lib.set_path(cfg, key, list(value) if isinstance(value, tuple) else value)
    if args.quick:
        cfg = config_lib.apply_quick(cfg)
        if args.epochs is not None:
            cfg["train"]["epochs"] = args.epochs
    config_lib.validate(cfg)
    return cfg


def load_data(cfg: dict[str, Any], args: argparse.Namespace, device) -> data_lib.DataSplits:
    d = cfg["data"]
    return data_lib.load_splits(
        cfg["dataset"], data_lib.resolve_data_dir(args.data_dir), data_lib.resolve_mirror(args.data_mirror),
        val_size=d["val_size"], split_seed=d["split_seed"], train_subset=d["train_subset"],
        val_subset=d["val_subset"], test_subset=d["test_subset"], device=device,
    )


def run(args: argparse.Namespace) -> int:
    from analysis import tables
    from bench.training import run_method  # heavy imports after argument checks

    cfg = resolve_config(args)
    device = resolve_device(cfg["device"])
    precision = resolve_precision(cfg["precision"], device)
    data = load_data(cfg, args, device)
    uri = tracking.resolve_uri(args.tracking_uri)
    tracking.setup(uri)
    experiment = tracking.experiment_id(f"noprop-bench-{cfg['dataset']}", uri)
    print(f"dataset {data.name} ({data.source}): train {len(data.train_y)}, val {len(data.val_y)}, "
          f"test {len(data.test_y)} | device {device} | precision {precision} | tracking {uri}")
    print("One NoProp-DT epoch = every block has seen every training example once.")

    import mlflow

    results, failures = [], []
    tags = {"kind": "compare", "dataset": data.name, "quick": str(args.quick), "data_source": data.source,
            **tracking.environment_tags(device)}
    name = f"compare-{data.name}{'-quick' if args.quick else ''}"
    with tracking.tracked_run(experiment, name, tags=tags) as parent:
        mlflow.log_params({**config_lib.flatten(cfg), "resolved_precision": precision,
                           "resolved_device": str(device)})
        mlflow.log_text(config_lib.dump(cfg), "config.yaml")
        for method in cfg["methods"]:
            for seed in range(cfg["seed"], cfg["seed"] + cfg["seeds"]):
                try:
                    results.append(run_method(method, cfg, data, device, precision, seed,
                                              experiment_id=experiment, parent_run_id=parent.info.run_id))
                except NonFiniteLoss as err:  # that method stops, the comparison goes on
                    print(f"error: {err}; its run is marked FAILED", file=sys.stderr)
                    failures.append(str(err))
        if results:
            runs = pd.DataFrame([{"method": r.method, "seed": r.seed, **r.metrics,
                                  "peak_mem_kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"}
                                 for r in results])
            table = tables.aggregate(runs, [m for m in cfg["methods"]])
            mlflow.log_text(table.to_csv(index=False), "comparison.csv")
            mlflow.log_text(tables.to_markdown(table), "comparison.md")
            print()
            print(tables.to_markdown(table))
        print(f"\nMLflow: parent run {parent.info.run_id} in experiment noprop-bench-{data.name} ({uri}); "
              f"see it with: mlflow ui --backend-store-uri {uri}")
        if failures:
            mlflow.set_tag("failed_methods", "; ".join(failures))
            raise IncompleteComparison(f"{len(failures)} method run(s) failed: " + "; ".join(failures))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tracking.stop_on_sigterm()
    try:
        return run(args)
    except config_lib.ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except data_lib.DataError as err:
        parser.exit(2, f"{parser.prog}: data error: {err}\n")
    except DeviceError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except IncompleteComparison as err:
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"\n{err or 'interrupted'}: runs marked KILLED, finished epochs are kept in MLflow", file=sys.stderr)
        return 143 if isinstance(err, tracking.Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
