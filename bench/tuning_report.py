"""What a study leaves behind: the best configuration, the Pareto front, the trials table and the plots.

Everything goes into the study's output folder (default mlruns/studies/<study-name>/) and is logged as
artifacts of the invocation's MLflow parent run. Files are replaced atomically, so several workers that
finish at the same time each leave a complete file (written from the trials in storage at that moment).
"""
from __future__ import annotations

import copy
import datetime as dt
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from bench import config as config_lib
from bench.tuning import Objective, accuracy_index, apply_params
from bench.tuning_study import outcome


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def complete_trials(study: Any) -> list[Any]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def select_best(study: Any, objectives: list[Objective]) -> Any | None:
    """The best trial; for several objectives the Pareto-front trial with the best accuracy, ties broken by
    the other objectives in order. None while no trial has completed."""
    if not complete_trials(study):
        return None
    if len(objectives) == 1:
        return study.best_trial
    i = accuracy_index(objectives)
    order = [i] + [j for j in range(len(objectives)) if j != i]

    def key(t: Any) -> tuple[float, ...]:
        return tuple(t.values[j] if objectives[j].direction == "maximize" else -t.values[j] for j in order)

    return max(study.best_trials, key=key)


def best_config(file_cfg: dict[str, Any], trial: Any) -> dict[str, Any]:
    """The base config (config file + --set overrides) with the trial's parameters set, validated."""
    return apply_params(copy.deepcopy(file_cfg), dict(trial.params))


def best_config_text(cfg: dict[str, Any], trial: Any, objectives: list[Objective], study_name: str,
                     storage_display: str, budget: dict[str, Any]) -> str:
    values = ", ".join(f"{o.name} = {v:.6g}" for o, v in zip(objectives, trial.values, strict=True))
    flags = f"--epochs {budget['epochs']}"
    if budget.get("train_subset"):
        flags += f" --set data.train_subset={budget['train_subset']}"
    header = [
        f"# Best configuration of Optuna study {study_name!r} ({storage_display}),",
        f"# written {dt.datetime.now().astimezone().isoformat(timespec='seconds')} by runners.tune.",
        f"# Trial {trial.number}: {values} (validation only; the test set was never used while tuning).",
        "# Tuned parameters: " + ", ".join(f"{k}={v}" for k, v in trial.params.items()),
        f"# The trials trained {budget['method']} for {budget['epochs']} epoch(s) on "
        f"{budget.get('train_subset') or 'all'} training images; to train exactly like them:",
        f"#   python -m runners.compare --dataset {cfg['dataset']} --config THIS_FILE --methods {budget['method']} "
        f"{flags}",
        "",
    ]
    return "\n".join(header) + config_lib.dump(cfg)


def pareto_csv(study: Any, objectives: list[Objective]) -> str:
    import pandas as pd

    rows = []
    for t in sorted(study.best_trials, key=lambda t: t.number):
        row = {"trial": t.number}
        row.update({o.name: v for o, v in zip(objectives, t.values, strict=True)})
        row.update(t.params)
        row["mlflow_run_id"] = t.user_attrs.get("mlflow_run_id", "")
        rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False)


def trials_csv(study: Any) -> str:
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name, "outcome": outcome(t)}
        if t.values is not None:
            names = study.metric_names or [f"value_{i}" for i in range(len(t.values))]
            if len(t.values) == 1 and study.metric_names is None:
                names = ["value"]
            row.update(dict(zip(names, t.values, strict=True)))
        row["duration_s"] = t.duration.total_seconds() if t.duration else None
        row.update({f"params.{k}": v for k, v in t.params.items()})
        row.update({f"attrs.{k}": v for k, v in t.user_attrs.items()})
        rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False)


def save_plots(study: Any, objectives: list[Objective], out_dir: Path) -> tuple[list[Path], list[str]]:
    """Optuna's matplotlib plots as PNGs; returns (files, notes on plots that were skipped and why)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    notes: list[str] = []
    complete = complete_trials(study)
    i = accuracy_index(objectives)
    multi = len(objectives) > 1
    acc = objectives[i]
    target = (lambda t: t.values[i]) if multi else None
    target_name = acc.name
    params = sorted({k for t in complete for k in t.params})
    varying = [k for k in params if len({repr(t.params.get(k)) for t in complete if k in t.params}) > 1]

    def plot(name: str, make: Any, need: int = 1, why: str = "") -> None:
        if len(complete) < need:
            notes.append(f"{name}: skipped, needs at least {need} complete trial(s), have {len(complete)}"
                         + (f" ({why})" if why else ""))
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = make()
                fig = (result.flat[0] if hasattr(result, "flat") else result).figure
                fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 5))
                path = out_dir / f"{name}.png"
                fig.savefig(path, dpi=110, bbox_inches="tight")
            files.append(path)
        except Exception as err:  # a plot must never cost the study its results
            notes.append(f"{name}: skipped ({type(err).__name__}: {err})")
        finally:
            plt.close("all")

    plot("optimization_history", lambda: vis.plot_optimization_history(study, target=target, target_name=target_name))
    if len(varying) == 0:
        notes.append("param_importances: skipped, no parameter varied across complete trials")
    else:
        plot("param_importances",
             lambda: vis.plot_param_importances(study, target=target, target_name=target_name, params=varying),
             need=2, why="importances compare trials")
    plot("slice", lambda: vis.plot_slice(study, target=target, target_name=target_name))
    numeric = [k for k in varying if all(isinstance(t.params.get(k, 0.0), (int, float)) for t in complete)]
    if len(numeric) >= 2:
        plot("contour", lambda: vis.plot_contour(study, params=numeric[:2] if len(numeric) == 2 else
                                                 _top_two(study, numeric, target), target=target,
                                                 target_name=target_name), need=2)
    else:
        notes.append("contour: skipped, needs two numeric parameters that varied")
    if not multi and any(t.intermediate_values for t in complete):
        plot("intermediate_values", lambda: vis.plot_intermediate_values(study))
    if multi:
        if len(objectives) in (2, 3):
            plot("pareto_front", lambda: vis.plot_pareto_front(study, target_names=[o.name for o in objectives]))
        else:
            notes.append("pareto_front: skipped, Optuna plots 2 or 3 objectives")
    del optuna
    return files, notes


def _top_two(study: Any, params: list[str], target: Any) -> list[str]:
    """The two most important numeric parameters (fANOVA), falling back to the first two."""
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, params=params, target=target)
        return list(imp)[:2]
    except Exception:
        return params[:2]
