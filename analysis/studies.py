"""Optuna studies for the report: where the storage is, which dataset a study belongs to, what it found.

A study belongs to a dataset when its user attribute `dataset` says so, else when its name contains the
dataset's name as a word (`noprop_dt-mnist`, `mnist_lr`); otherwise its dataset is unknown and the report
lists it separately. Reading never creates a storage: a missing SQLite file is reported as missing.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.runs import DATASETS, sqlite_path

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass
class StudyInfo:
    name: str
    dataset: str | None
    study: Any  # optuna.Study


def resolve_storage(cli_value: str | None) -> tuple[str | None, str, str]:
    """(storage URL or None, what the report says about it, where we looked — absolute, for messages).

    --optuna-storage, else the default SQLite file when it exists; a missing file is never created.
    """
    url = cli_value or DEFAULT_STORAGE
    how = "--optuna-storage" if cli_value else "the default"
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return None, f"{url} ({how}; file not found)", f"{url} ({how}; no file {path.resolve()})"
    return url, url, url


def study_dataset(name: str, user_attrs: dict[str, Any]) -> str | None:
    ds = user_attrs.get("dataset")
    if isinstance(ds, str) and ds:
        return ds
    for candidate in DATASETS:
        if re.search(rf"(?<![a-z0-9]){candidate}(?![a-z0-9])", name.lower()):
            return candidate
    return None


def load_studies(url: str) -> list[StudyInfo]:
    """Every study in the storage, sorted by name."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    summaries = optuna.get_all_study_summaries(url, include_best_trial=False)
    out = []
    for s in sorted(summaries, key=lambda s: s.study_name):
        study = optuna.load_study(study_name=s.study_name, storage=url)
        out.append(StudyInfo(s.study_name, study_dataset(s.study_name, dict(s.user_attrs)), study))
    return out


def fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def trial_counts(study) -> pd.DataFrame:
    trials = study.get_trials(deepcopy=False)
    counts = {s: 0 for s in STATES}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return pd.DataFrame({"state": list(counts), "trials": [str(v) for v in counts.values()]})


def n_complete(study) -> int:
    return sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


def objective_names(study) -> list[str]:
    names = getattr(study, "metric_names", None)
    n = len(study.directions)
    if names and len(names) == n:
        return [str(x) for x in names]
    return ["objective"] if n == 1 else [f"objective {i}" for i in range(n)]


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(params[k])}" for k in sorted(params))


def best(study) -> tuple[str, pd.DataFrame | None]:
    """(summary line, best trial's params — or the Pareto front of a multi-objective study)."""
    directions = [d.name.lower() for d in study.directions]
    names = objective_names(study)
    goals = ", ".join(f"{d} {n}" for d, n in zip(directions, names, strict=False))
    if n_complete(study) == 0:
        return f"{goals}; no complete trial yet", None
    if len(directions) > 1:
        front = sorted(study.best_trials, key=lambda t: t.number)
        table = pd.DataFrame([{"trial": str(t.number),
                               **{n: fmt_value(v) for n, v in zip(names, t.values, strict=True)},
                               "params": _params_text(t.params)} for t in front])
        return f"{goals}; {len(front)} trial(s) on the Pareto front", table
    trial = study.best_trial
    params = pd.DataFrame({"parameter": sorted(trial.params),
                           "value": [fmt_value(trial.params[k]) for k in sorted(trial.params)]})
    return f"{goals}; best value {fmt_value(trial.value)} (trial {trial.number})", params


def _evaluator():
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: the same trials give the same numbers


def _target(study, index: int | None):
    if index is None or len(study.directions) == 1:
        return None
    return lambda t: t.values[index]


def importances(study, index: int | None = None) -> tuple[pd.DataFrame | None, str | None]:
    """fANOVA importances (seeded) for one objective, or why there are none."""
    import optuna

    done = n_complete(study)
    if done < 2:
        return None, f"parameter importances need at least 2 complete trials; this study has {done}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, evaluator=_evaluator(),
                                                          target=_target(study, index))
    except Exception as err:  # noqa: BLE001 - e.g. every trial used the same values: say so, go on
        return None, f"parameter importances could not be computed: {type(err).__name__}: {err}"
    if not imp:
        return None, "no parameter varied between complete trials"
    keys = sorted(imp, key=lambda k: (-round(imp[k], 12), k))
    return pd.DataFrame({"parameter": keys, "importance": [f"{imp[k]:.3f}" for k in keys]}), None


def plot_history(study, path: Path, title: str, index: int | None = None) -> Path | None:
    from optuna.visualization import matplotlib as ovm

    from analysis import plots

    if n_complete(study) == 0:
        return None
    name = objective_names(study)[index or 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plots.optuna_axes(lambda: ovm.plot_optimization_history(study, target=_target(study, index),
                                                                       target_name=name), path, title=title)


def plot_importances(study, path: Path, title: str, index: int | None = None) -> Path | None:
    from optuna.visualization import matplotlib as ovm

    from analysis import plots

    name = objective_names(study)[index or 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plots.optuna_axes(lambda: ovm.plot_param_importances(study, evaluator=_evaluator(),
                                                                    target=_target(study, index),
                                                                    target_name=name), path, title=title)
