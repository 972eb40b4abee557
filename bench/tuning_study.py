"""Optuna plumbing for runners.tune: storage URLs, creating/resuming a study, and per-trial callbacks.

Storage URLs (`--storage`):
- any SQLAlchemy URL Optuna's RDBStorage accepts: `sqlite:///mlruns/optuna.db` (default),
  `postgresql+psycopg2://user:pass@host:5432/db`, `mysql+pymysql://...`;
- a journal file: `journal:///abs/path/study.log`, `journal://relative/path.log`, or any plain path ending
  in `.log` (Optuna's JournalStorage with a JournalFileBackend; works where SQLite's file locks do not,
  e.g. on NFS).
"""
from __future__ import annotations

import contextlib
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.tuning import OUTCOME_COMPLETE, OUTCOME_FAILED, OUTCOME_PRUNED, OUTCOME_REJECTED, Objective, accuracy_index

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
JOURNAL_PREFIX = "journal://"
# RDB storages record a heartbeat for every running trial; a trial of a worker killed without a chance to
# clean up (kill -9, lost machine) is marked FAIL by the next worker once its heartbeat is this old.
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 300


class StorageError(ValueError):
    """A storage URL that cannot be opened, or a study that does not match this invocation."""


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and MLflow tags."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def journal_path(url: str) -> Path | None:
    """The journal file of a `journal://PATH` URL or a plain `*.log` path; None for other URLs."""
    if url.startswith(JOURNAL_PREFIX):
        path = url[len(JOURNAL_PREFIX):]
        if not path:
            raise StorageError(f"journal storage URL {url!r} names no file; use journal:///abs/path.log")
        return Path(path)
    if "://" not in url and url.endswith(".log"):
        return Path(url)
    return None


RACE_MARKERS = ("unique constraint", "already exists", "database is locked", "duplicate key")


def retry_races(fn: Callable[[], Any], attempts: int = 6) -> Any:
    """Call fn, retrying when it lost a race with another worker creating the same tables or rows.

    Two processes that open a fresh database at the same moment both try to create its schema; the
    loser sees a unique-constraint or "already exists" error, and simply succeeds on the next try.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:
            if attempt == attempts - 1 or not any(m in str(err).lower() for m in RACE_MARKERS):
                raise
            time.sleep(0.5 * 2 ** attempt + random.random())
    raise AssertionError("unreachable")


@contextlib.contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Serialise first-time setup of a local SQLite database (Optuna's or MLflow's) among processes.

    Creating a fresh database runs schema migrations that are not safe to run twice at once; worker
    processes started together on one machine take turns here. Other URLs pass straight through.
    """
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        yield
        return
    import fcntl

    db = Path(url[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f".{db.name}.init-lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_storage(url: str) -> Any:
    """An Optuna storage object for the URL; raises StorageError with the reason if it cannot be opened."""
    import optuna

    try:
        journal = journal_path(url)
        if journal is not None:
            from optuna.storages.journal import JournalFileBackend

            journal.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        if "://" not in url:
            raise StorageError(f"storage {url!r} is neither a database URL (sqlite:///..., postgresql+psycopg2://...) "
                               "nor a journal file (journal:///path.log or a path ending in .log)")
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            db = url[len("sqlite:///"):]
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            # Wait for the file lock instead of failing at once when workers write at the same moment.
            engine_kwargs = {"connect_args": {"timeout": 120}}
        else:
            engine_kwargs = {"pool_pre_ping": True}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            with sqlite_init_lock(url):
                return retry_races(lambda: optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=HEARTBEAT_GRACE_S))
    except StorageError:
        raise
    except Exception as err:  # driver missing, server unreachable, bad credentials, ...
        raise StorageError(f"cannot open Optuna storage {mask_url(url)}: {type(err).__name__}: {err}") from None


CODE_DIRS = ("bench", "models", "runners")


def code_fingerprint(root: Path | None = None) -> str:
    """A short hash of the training code (every .py under bench/, models/, runners/), committed or not.

    Stored with the study and with every trial: trials trained by different code are not comparable,
    and a commit hash alone misses uncommitted edits.
    """
    import hashlib

    root = root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for d in CODE_DIRS:
        for path in sorted((root / d).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def code_change_warning(study: Any, fingerprint: str) -> str | None:
    """Record the code fingerprint on a new study; on a resumed one, a warning if the code has changed."""
    stored = study.user_attrs.get("code_fingerprint")
    if stored is None:
        study.set_user_attr("code_fingerprint", fingerprint)
        return None
    if stored == fingerprint:
        return None
    return (f"the training code changed since study {study.study_name!r} was created (code fingerprint {stored} "
            f"then, {fingerprint} now): new trials are not comparable with the earlier ones; use a new "
            "--study-name unless the change cannot affect results")


@dataclass(frozen=True)
class StudyIdentity:
    """What makes trials of one study comparable; stored as study user attributes when it is created."""

    dataset: str
    method: str
    objective: str  # comma-separated objective names

    def attrs(self) -> dict[str, str]:
        return {"dataset": self.dataset, "method": self.method, "objective": self.objective}


def create_or_load_study(storage: Any, name: str, objectives: list[Objective], identity: StudyIdentity,
                         sampler: Any, pruner: Any) -> tuple[Any, int | None]:
    """Create the study, or resume the one with this name; (study, trials it had before, None if new).

    A resumed study must have been created for the same dataset, method and objective(s): mixing would
    make its trials incomparable, so that is refused with the reason.
    """
    import optuna

    before = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                directions=[o.direction for o in objectives], load_if_exists=True)
    existing = before.get(name)
    stored = study.user_attrs
    if not stored.get("objective"):  # freshly created (or created meanwhile by a parallel worker)
        for key, value in identity.attrs().items():
            study.set_user_attr(key, value)
        stored = identity.attrs()
    mismatched = {k: (stored.get(k), v) for k, v in identity.attrs().items() if stored.get(k) != v}
    wanted = [o.direction for o in objectives]
    have = [d.name.lower() for d in study.directions]
    if mismatched or have != wanted:
        what = "; ".join(f"{k}: study has {old!r}, this run asks for {new!r}" for k, (old, new) in mismatched.items())
        if have != wanted:
            what = (what + "; " if what else "") + f"directions: study has {have}, this run asks for {wanted}"
        raise StorageError(f"study {name!r} already exists with different settings ({what}); "
                           "choose another --study-name")
    if len(objectives) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.name for o in objectives])
    return study, existing


def make_sampler(seed: int | None, startup_trials: int) -> Any:
    """TPE with joint (multivariate, grouped) sampling for the conditional schedule parameters and a
    constant liar so parallel workers do not all try the same point."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True,
                                          group=True, constant_liar=True)


def make_pruner(enabled: bool, startup_trials: int) -> Any:
    import optuna

    if not enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)


# ----------------------------------------------------------------------------------------- callbacks
def outcome(trial: Any) -> str:
    """complete | pruned | rejected | failed (| running/waiting) for a FrozenTrial."""
    state = trial.state.name
    if state == "COMPLETE":
        return OUTCOME_COMPLETE
    if state == "PRUNED":
        return OUTCOME_REJECTED if trial.user_attrs.get("outcome") == OUTCOME_REJECTED else OUTCOME_PRUNED
    if state == "FAIL":
        return OUTCOME_FAILED
    return state.lower()


def best_summary(study: Any, objectives: list[Objective]) -> str:
    """'best val_acc 0.9123 (trial 7)' over every finished trial of the study (all workers)."""
    i = accuracy_index(objectives)
    try:
        if len(objectives) == 1:
            best = study.best_trial
            return f"best {objectives[0].name} {best.value:.4f} (trial {best.number})"
        front = study.best_trials
    except ValueError:
        return "no completed trial yet"
    if not front:
        return "no completed trial yet"
    sign = 1 if objectives[i].direction == "maximize" else -1
    top = max(front, key=lambda t: sign * t.values[i])
    return f"Pareto front {len(front)} trial(s), best {objectives[i].name} {top.values[i]:.4f} (trial {top.number})"


class TrialCallback:
    """After each trial: finish its MLflow child run (state, values) and advance the progress bar."""

    def __init__(self, objectives: list[Objective], parent_run_id: str, experiment_id: str, total: int | None,
                 progress: bool = True):
        from tqdm.auto import tqdm

        self.objectives = objectives
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id
        self.lock = threading.Lock()
        self.counts = {OUTCOME_COMPLETE: 0, OUTCOME_PRUNED: 0, OUTCOME_REJECTED: 0, OUTCOME_FAILED: 0}
        self.started = time.monotonic()
        self.bar = tqdm(total=total, desc="trials", unit="trial", dynamic_ncols=True, position=0,
                        disable=not progress)

    def __call__(self, study: Any, trial: Any) -> None:
        kind = outcome(trial)
        try:
            self._finish_run(trial, kind)
        except Exception as err:  # tracking trouble must not stop the study
            self.bar.write(f"warning: could not update the MLflow run of trial {trial.number}: {err}")
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            summary = best_summary(study, self.objectives)
            self.bar.update(1)
            self.bar.set_postfix_str(summary.replace(" (trial ", " (#"), refresh=True)
            self.bar.write(self._line(trial, kind, summary))

    def _line(self, trial: Any, kind: str, summary: str) -> str:
        done = sum(self.counts.values())
        elapsed = time.monotonic() - self.started
        eta = ""
        if self.bar.total:
            left = max(self.bar.total - done, 0)
            eta = f", ETA {_fmt_s(elapsed / done * left)}" if done else ""
        if kind == OUTCOME_COMPLETE:
            vals = ", ".join(f"{o.name} {v:.4g}" for o, v in zip(self.objectives, trial.values, strict=True))
            what = f"complete: {vals}"
        else:
            reason = (trial.user_attrs.get("rejected_reason") or trial.user_attrs.get("pruned_reason")
                      or trial.user_attrs.get("fail_reason") or "")
            what = f"{kind}" + (f": {reason}" if reason else "")
        params = ", ".join(f"{k.split('.')[-1]}={_fmt_v(v)}" for k, v in trial.params.items())
        total = f"/{self.bar.total}" if self.bar.total else ""
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
        return (f"[trial {trial.number}] {what} | {params}\n"
                f"  {done}{total} trials done in this run ({counts}), elapsed {_fmt_s(elapsed)}{eta}; {summary}")

    def _finish_run(self, trial: Any, kind: str) -> None:
        from mlflow import MlflowClient

        client = MlflowClient()
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is None:  # failed before its first epoch ended: find the run by its tags
            runs = client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' "
                              f"and tags.trial_number = '{trial.number}'",
                max_results=1)
            if not runs:
                return
            run_id = runs[0].info.run_id
        client.set_tag(run_id, "optuna_state", trial.state.name)
        client.set_tag(run_id, "outcome", kind)
        if kind == OUTCOME_COMPLETE:
            metrics = {f"trial_value/{o.name}": v for o, v in zip(self.objectives, trial.values, strict=True)}
            metrics["trial_value"] = trial.values[0]
            for key, value in metrics.items():
                client.log_metric(run_id, key, value)
        elif kind == OUTCOME_PRUNED:
            # run_method's tracked_run ended the run FAILED with an `error` tag; pruning is no error.
            client.set_tag(run_id, "pruned_reason", trial.user_attrs.get("pruned_reason", "pruned"))
            client.delete_tag(run_id, "error")
            client.set_terminated(run_id, "KILLED")
        elif kind == OUTCOME_FAILED and trial.user_attrs.get("fail_reason"):
            client.set_tag(run_id, "fail_reason", trial.user_attrs["fail_reason"][:5000])

    def close(self) -> None:
        self.bar.close()


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_v(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
