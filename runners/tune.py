"""Tune NoProp-DT's noise schedule (and η, optionally T and the embedding) with Optuna, tracked in MLflow.

    python -m runners.tune --dataset mnist --trials 20 --epochs-per-trial 1 --subset 5000
    python -m runners.tune --dataset mnist --trials 30 --objective val_acc,train_time --n-jobs 2
    python -m runners.tune --dataset cifar10 --trials 10 --storage postgresql+psycopg2://u:p@db:5432/optuna

Trials train on the training split and are scored on the validation split; the test set is never used.
Running the command again with the same --study-name (and --storage) adds trials to the same study, and
several processes or machines can work on one study at once. At the end the study's best configuration
is written as a full config file that `python -m runners.compare --config FILE` accepts. See docs/TUNING.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import secrets
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import config as config_lib
from bench import data as data_lib
from bench import tracking
from bench.hardware import DeviceError, resolve_device, resolve_precision
from bench.tuning import (
    OBJECTIVES,
    ObjectiveError,
    SearchSpaceError,
    TrialObjective,
    TrialSetup,
    check_space_against,
    load_space,
    parse_objectives,
)
from bench.tuning_study import DEFAULT_STORAGE, StorageError, StudyIdentity, TrialCallback, mask_url
from runners.cli import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
DEFAULT_SPACE = CONFIG_DIR / "search_space.yaml"
TUNABLE_METHODS = ("noprop_dt", "noprop_dt_decoder")
STUDIES_DIR = Path("mlruns") / "studies"


class UsageError(ValueError):
    """A bad combination of command-line options."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runners.tune",
        description="Search NoProp-DT's noise schedule and η with Optuna on the validation split; every trial "
                    "is an MLflow child run, the best configuration is written as a config file.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--dataset", required=True, choices=data_lib.DATASETS, help="which real dataset to use")
    p.add_argument("--trials", type=int, default=None,
                   help="trials this invocation runs (rejected and pruned ones included); with several "
                        "workers each runs its own --trials")
    p.add_argument("--method", choices=TUNABLE_METHODS, default="noprop_dt", help="the method whose trials train")
    p.add_argument("--objective", default="val_acc",
                   help="objective(s), comma-separated for multi-objective: "
                        + "; ".join(f"{o.name} ({o.direction}: {o.help})" for o in OBJECTIVES.values()))
    p.add_argument("--study-name", default=None,
                   help="Optuna study; an existing one is resumed (default: <dataset>-<method>-<objective>)")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="Optuna storage: a database URL (sqlite:///..., postgresql+psycopg2://user:pass@host/db, "
                        "mysql+pymysql://...) or a journal file (journal:///path/study.log or any path ending .log)")
    p.add_argument("--n-jobs", type=int, default=1,
                   help="trials trained at once in this process (threads; torch threads are divided among them)")
    p.add_argument("--timeout", type=float, default=None,
                   help="stop starting new trials after this many seconds (running trials finish)")
    p.add_argument("--epochs-per-trial", type=int, default=None, help="training epochs of a trial (default: config)")
    p.add_argument("--subset", type=int, default=None,
                   help="train every trial on the first N training images (default: config's data.train_subset)")
    p.add_argument("--search-space", type=Path, default=DEFAULT_SPACE, help="search-space YAML")
    p.add_argument("--seed", type=int, default=None,
                   help="training seed of every trial, so trials differ only in their parameters (default: config)")
    p.add_argument("--sampler-seed", type=int, default=None,
                   help="seed of the TPE sampler for a reproducible single-worker study (the number of trials "
                        "already in the study is added, so a resumed study does not repeat its first draws); "
                        "default: a fresh random seed, logged to MLflow")
    p.add_argument("--startup-trials", type=int, default=10,
                   help="random trials before TPE starts modelling the space")
    p.add_argument("--pruner", choices=("median", "none"), default="median",
                   help="stop unpromising trials early on their per-epoch validation accuracy "
                        "(single objective only; never after a trial's last epoch)")
    p.add_argument("--pruner-startup-trials", type=int, default=5, help="trials the MedianPruner never prunes")
    p.add_argument("--config", type=Path, default=None, help="base experiment YAML (default: configs/<dataset>.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config key, e.g. --set data.val_subset=1000 --set noprop.T=5")
    p.add_argument("--output-dir", type=Path, default=None,
                   help=f"where best_config.yaml, CSVs and plots go (default: {STUDIES_DIR}/<study-name>)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: noprop-bench-<dataset>)")
    p.add_argument("--tracking-uri", default=None,
                   help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or {tracking.DEFAULT_URI})")
    p.add_argument("--data-dir", default=None, help="dataset root (default: $NOPROP_DATA_DIR or ./data)")
    p.add_argument("--data-mirror", default=None,
                   help="offline folder with the official download files and SHA256SUMS (default: $NOPROP_DATA_MIRROR)")
    p.add_argument("--device", choices=config_lib.DEVICES, default=None, help="training device (default: config)")
    p.add_argument("--precision", choices=config_lib.PRECISIONS, default=None,
                   help="fp32, bf16 autocast, or auto = bf16 where the hardware runs it natively (default: config)")
    p.add_argument("--no-plots", action="store_true", help="skip Optuna's plots at the end")
    p.add_argument("--trial-progress", action="store_true",
                   help="also show each trial's epoch and batch progress bars (hidden by default; per-epoch "
                        "lines are always printed)")
    return p


# ----------------------------------------------------------------------------------------- configuration
def check_args(args: argparse.Namespace) -> None:
    if args.trials is None and args.timeout is None:
        raise UsageError("give --trials N (and/or --timeout SECONDS) so the study knows when to stop")
    for name in ("trials", "n_jobs", "epochs_per_trial", "subset", "startup_trials"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.pruner_startup_trials < 0:
        raise UsageError(f"--pruner-startup-trials must be >= 0, got {args.pruner_startup_trials}")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {args.timeout}")


def resolve_configs(args: argparse.Namespace, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(file config = base config file + --set, what best_config.yaml builds on;
        trial base = that plus this invocation's method, budget, hardware and seed)."""
    path = args.config or CONFIG_DIR / f"{args.dataset}.yaml"
    overrides = dict(config_lib.parse_override(o) for o in args.overrides)
    file_cfg = config_lib.load(path, overrides)
    file_cfg["dataset"] = args.dataset
    config_lib.validate(file_cfg)
    trial_base = copy.deepcopy(file_cfg)
    flags = {"methods": [method], "train.epochs": args.epochs_per_trial, "data.train_subset": args.subset,
             "device": args.device, "precision": args.precision, "seed": args.seed, "seeds": 1}
    for key, value in flags.items():
        if value is not None:
            config_lib.set_path(trial_base, key, value)
    config_lib.validate(trial_base)
    return file_cfg, trial_base


def load_data(cfg: dict[str, Any], args: argparse.Namespace, device: Any) -> data_lib.DataSplits:
    """Train and validation splits as configured; the test split is loaded as a single image and never used."""
    d = cfg["data"]
    return data_lib.load_splits(
        cfg["dataset"], data_lib.resolve_data_dir(args.data_dir), data_lib.resolve_mirror(args.data_mirror),
        val_size=d["val_size"], split_seed=d["split_seed"], train_subset=d["train_subset"],
        val_subset=d["val_subset"], test_subset=1, device=device,
    )


@contextlib.contextmanager
def trial_bars_hidden(hide: bool) -> Iterator[None]:
    """Hide the per-epoch and per-batch bars of bench.training/bench.engines while the study bar is shown.

    Their tqdm.write lines (one per epoch) still print. Only the module attribute is swapped, and restored.
    """
    if not hide:
        yield
        return
    from tqdm.auto import tqdm

    import bench.engines
    import bench.training

    class HiddenBar(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            k["disable"] = True
            super().__init__(*a, **k)

    swapped = [m for m in (bench.training, bench.engines) if getattr(m, "tqdm", None) is tqdm]
    for module in swapped:
        module.tqdm = HiddenBar
    try:
        yield
    finally:
        for module in swapped:
            module.tqdm = tqdm


@contextlib.contextmanager
def torch_threads_per_job(n_jobs: int) -> Iterator[int]:
    """Split the CPU threads among concurrent trials instead of oversubscribing the cores."""
    import torch

    before = torch.get_num_threads()
    per_job = max(1, before // n_jobs)
    torch.set_num_threads(per_job)
    try:
        yield per_job
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> int:
    check_args(args)
    objectives = parse_objectives(args.objective)
    objective_text = ",".join(o.name for o in objectives)
    study_name = args.study_name or f"{args.dataset}-{args.method}-{objective_text.replace(',', '-')}"
    file_cfg, trial_base = resolve_configs(args, args.method)
    space = load_space(args.search_space)
    invalid_share = check_space_against(space, trial_base)

    import optuna

    from bench.engines import NonFiniteLoss
    from bench.tuning_study import (
        code_change_warning,
        code_fingerprint,
        create_or_load_study,
        make_pruner,
        make_sampler,
        open_storage,
        retry_races,
        sqlite_init_lock,
    )

    device = resolve_device(trial_base["device"])
    precision = resolve_precision(trial_base["precision"], device)
    storage = open_storage(args.storage)  # before the data: a bad URL should fail in seconds
    storage_display = mask_url(args.storage)
    data = load_data(trial_base, args, device)

    uri = tracking.resolve_uri(args.tracking_uri)
    tracking.setup(uri)
    experiment_name = args.experiment or f"noprop-bench-{args.dataset}"
    # A fresh tracking database is created on first use; parallel workers may race to create it.
    with sqlite_init_lock(uri):
        experiment = retry_races(lambda: tracking.experiment_id(experiment_name, uri))

    multi = len(objectives) > 1
    prune = args.pruner == "median" and not multi
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, existing = retry_races(lambda: create_or_load_study(
        storage, study_name, objectives, StudyIdentity(args.dataset, args.method, objective_text),
        sampler=None, pruner=make_pruner(prune, args.pruner_startup_trials)))
    fingerprint = code_fingerprint()
    code_warning = code_change_warning(study, fingerprint)
    sampler_seed = (args.sampler_seed + (existing or 0)) if args.sampler_seed is not None else secrets.randbits(31)
    study.sampler = make_sampler(sampler_seed, args.startup_trials)
    out_dir = args.output_dir or STUDIES_DIR / study_name

    pruning = "MedianPruner" if prune else "off" + (" (multi-objective)" if multi and args.pruner == "median" else "")
    print(f"study {study_name!r} in {storage_display}: "
          + (f"resumed with {existing} trial(s)" if existing is not None else "created")
          + f" | objective {objective_text} ({', '.join(o.direction for o in objectives)})"
          + f" | pruning {pruning}")
    if code_warning:
        print(f"WARNING: {code_warning}", file=sys.stderr)
    print(f"search space {space.source}: " + "; ".join(f"{p.key} {p.describe()}" for p in space.params))
    if invalid_share > 0:
        print(f"  about {invalid_share:.0%} of random combinations are invalid for this config; such trials are "
              "rejected (PRUNED, reason in user attr rejected_reason) without training")
    print(f"dataset {data.name} ({data.source}): train {len(data.train_y)}, val {len(data.val_y)} (test unused) | "
          f"{args.method}, {trial_base['train']['epochs']} epoch(s) per trial, T={trial_base['noprop']['T']} | "
          f"device {device} | precision {precision} | tracking {uri}")

    import mlflow

    tags = {"kind": "tune", "dataset": data.name, "method": args.method, "study_name": study_name,
            "storage": storage_display, "objective": objective_text, "data_source": data.source,
            "search_space": str(space.source), "code_fingerprint": fingerprint,
            **tracking.environment_tags(device)}
    if code_warning:
        tags["code_changed"] = code_warning
    setup = TrialSetup(space=space, base_cfg=trial_base, objectives=objectives, method=args.method, data=data,
                       device=device, precision=precision, seed=trial_base["seed"], experiment_id=experiment,
                       parent_run_id="", study_name=study_name, prune=prune, code_fingerprint=fingerprint)
    status = 0
    with tracking.tracked_run(experiment, f"tune-{study_name}", tags=tags) as parent:
        setup.parent_run_id = parent.info.run_id
        mlflow.log_params({**config_lib.flatten(trial_base), "resolved_precision": precision,
                           "resolved_device": str(device), "tune.trials": args.trials, "tune.timeout": args.timeout,
                           "tune.n_jobs": args.n_jobs, "tune.sampler_seed": sampler_seed,
                           "tune.startup_trials": args.startup_trials, "tune.pruner": "median" if prune else "none",
                           "tune.pruner_startup_trials": args.pruner_startup_trials,
                           "tune.trials_before": existing or 0})
        mlflow.log_text(config_lib.dump(trial_base), "trial_base_config.yaml")
        mlflow.log_text(space.text, "search_space.yaml")
        callback = TrialCallback(objectives, parent.info.run_id, experiment, args.trials)
        interrupted = False
        try:
            with trial_bars_hidden(not args.trial_progress), torch_threads_per_job(args.n_jobs):
                study.optimize(TrialObjective(setup), n_trials=args.trials, timeout=args.timeout,
                               n_jobs=args.n_jobs, catch=(NonFiniteLoss,), callbacks=[callback])
        except KeyboardInterrupt:
            interrupted = True
        finally:
            callback.close()
        mlflow.log_metrics({f"run_trials_{k}": float(v) for k, v in callback.counts.items()})
        status = report(study, objectives, file_cfg, trial_base, args, study_name, storage_display, out_dir)
        print(f"\nMLflow: parent run {parent.info.run_id} in experiment {experiment_name} ({uri}); "
              f"see it with: mlflow ui --backend-store-uri {uri}")
        print(f"Optuna dashboard: pip install optuna-dashboard; optuna-dashboard {dashboard_arg(args.storage)}")
        if interrupted:
            raise KeyboardInterrupt
    return status


def dashboard_arg(storage: str) -> str:
    """What to pass to optuna-dashboard: the database URL, or the journal file's path."""
    from bench.tuning_study import journal_path

    journal = journal_path(storage)
    return str(journal) if journal is not None else storage


def report(study: Any, objectives: list[Any], file_cfg: dict[str, Any], trial_base: dict[str, Any],
           args: argparse.Namespace, study_name: str, storage_display: str, out_dir: Path) -> int:
    """Best config, CSVs and plots into out_dir and the parent run; returns the exit status."""
    import mlflow
    import optuna

    from bench.tuning_report import (
        best_config,
        best_config_text,
        complete_trials,
        pareto_csv,
        save_plots,
        select_best,
        trials_csv,
        write_atomic,
    )
    from bench.tuning_study import outcome

    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[outcome(t)] = counts.get(outcome(t), 0) + 1
    mlflow.log_metrics({f"study_trials_{k}": float(v) for k, v in counts.items()}
                       | {"study_trials": float(len(trials))})
    print(f"\nstudy {study_name!r}: {len(trials)} trial(s) in storage: "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))

    write_atomic(out_dir / "trials.csv", trials_csv(study))
    mlflow.log_artifact(str(out_dir / "trials.csv"))
    best = select_best(study, objectives)
    if best is None:
        print("no trial completed, so there is no best configuration yet", file=sys.stderr)
        mlflow.set_tag("best_trial", "none")
        return 1
    cfg = best_config(file_cfg, best)
    budget = {"method": args.method, "epochs": trial_base["train"]["epochs"],
              "train_subset": trial_base["data"]["train_subset"]}
    best_path = out_dir / "best_config.yaml"
    write_atomic(best_path, best_config_text(cfg, best, objectives, study_name, storage_display, budget))
    summary = {"study": study_name, "trial": best.number,
               "values": {o.name: v for o, v in zip(objectives, best.values, strict=True)},
               "params": best.params, "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}
    write_atomic(out_dir / "best_trial.json", json.dumps(summary, indent=2) + "\n")
    for name in ("best_config.yaml", "best_trial.json"):
        mlflow.log_artifact(str(out_dir / name))
    if len(objectives) > 1:
        write_atomic(out_dir / "pareto_front.csv", pareto_csv(study, objectives))
        mlflow.log_artifact(str(out_dir / "pareto_front.csv"))
    mlflow.set_tag("best_trial", str(best.number))
    mlflow.log_metrics({f"best_{o.name}": v for o, v in zip(objectives, best.values, strict=True)})
    if not args.no_plots:
        files, notes = save_plots(study, objectives, out_dir / "plots")
        for f in files:
            mlflow.log_artifact(str(f), "plots")
        if notes:
            mlflow.log_text("\n".join(notes) + "\n", "plots/NOTES.txt")
            mlflow.set_tag("plot_notes", "; ".join(notes)[:5000])
            for note in notes:
                print(f"plot {note}")
    n_complete = len(complete_trials(study))
    values = ", ".join(f"{o.name} {v:.4f}" for o, v in zip(objectives, best.values, strict=True))
    print(f"best trial {best.number} of {n_complete} complete: {values}")
    print("  " + ", ".join(f"{k}={v}" for k, v in best.params.items()))
    print(f"best config: {best_path}  (python -m runners.compare --dataset {args.dataset} --config {best_path})")
    del optuna
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*ExperimentalWarning.*")
    tracking.stop_on_sigterm()
    try:
        return run(args)
    except (UsageError, ObjectiveError, SearchSpaceError, config_lib.ConfigError, StorageError, DeviceError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except data_lib.DataError as err:
        parser.exit(2, f"{parser.prog}: data error: {err}\n")
    except KeyboardInterrupt as err:
        print(f"\n{err or 'interrupted'}: the running trial is marked FAIL (its MLflow run KILLED); finished trials "
              "are kept in the study and the best config so far was written", file=sys.stderr)
        return 143 if isinstance(err, tracking.Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
