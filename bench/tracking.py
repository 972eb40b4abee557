"""MLflow plumbing: where runs go, what every run records about its setup, and how runs end."""
from __future__ import annotations

import contextlib
import platform
import signal
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import torch

from bench import hardware

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
ARTIFACT_DIR = Path("mlruns") / "artifacts"
PACKAGES = ("torch", "torchvision", "mlflow", "optuna", "numpy", "pandas")


def resolve_uri(cli_value: str | None) -> str:
    """--tracking-uri > MLFLOW_TRACKING_URI > sqlite:///mlruns/mlflow.db (MLflow 3 refuses ./mlruns files)."""
    import os

    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def setup(uri: str) -> None:
    """Point MLflow at `uri`, creating the folder of a local SQLite database first."""
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)


def experiment_id(name: str, uri: str) -> str:
    """Get or create an experiment; with a local SQLite store its artifacts live under mlruns/."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        root = Path(uri[len("sqlite:///"):]).parent / "artifacts"
        location = root.resolve().as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel worker
        return mlflow.get_experiment_by_name(name).experiment_id


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment_tags(device: torch.device) -> dict[str, str]:
    """Setup behind the numbers: commit, package versions, machine."""
    tags = {"git_commit": git_commit(), "python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            tags[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    tags.update({f"hw.{k}": v for k, v in hardware.describe(device).items()})
    return tags


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a batch scheduler, `timeout`): it ends runs like Ctrl-C does, as KILLED."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` in the main thread, so interrupted runs are marked, not left RUNNING."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"terminated by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def tracked_run(experiment: str, run_name: str, *, parent_run_id: str | None = None,
                tags: dict[str, Any] | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run that ends FINISHED, FAILED on an exception (with the error as a tag) or KILLED on Ctrl-C/SIGTERM.

    Metrics logged before the failure stay in the store.
    """
    # parent_run_id alone works from any thread; nested=True is needed only when this thread has the
    # parent active already (MLflow keeps one active-run stack per thread).
    nested = parent_run_id is not None and mlflow.active_run() is not None
    run = mlflow.start_run(experiment_id=experiment, run_name=run_name, parent_run_id=parent_run_id,
                           nested=nested, tags=tags)
    try:
        yield run
    except KeyboardInterrupt as err:
        mlflow.set_tag("error", str(err) or "interrupted by the user (KeyboardInterrupt)")
        mlflow.end_run("KILLED")
        raise
    except BaseException as err:
        mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")
