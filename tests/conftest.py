"""Shared pytest fixtures and markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The offline dataset mirror sits next to the repository (../shared/datasets) on the build machines.
DEFAULT_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds (e.g. unpacks CIFAR-10); deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    """The offline dataset mirror (NOPROP_DATA_MIRROR, else ../shared/datasets); skips if absent."""
    mirror = Path(os.environ.get("NOPROP_DATA_MIRROR") or DEFAULT_MIRROR)
    if not (mirror / "SHA256SUMS").is_file():
        if os.environ.get("NOPROP_REQUIRE_MIRROR"):  # CI: real-data tests must run, never skip
            pytest.fail(f"NOPROP_REQUIRE_MIRROR is set but there is no dataset mirror at {mirror}")
        pytest.skip(f"no dataset mirror with a SHA256SUMS at {mirror} (set NOPROP_DATA_MIRROR to point at one)")
    return mirror


@pytest.fixture(scope="session")
def mnist_data_dir(mirror_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with MNIST installed from the mirror, shared by the session; do not modify it."""
    from bench.data import prepare

    data_dir = tmp_path_factory.mktemp("mnist-data")
    prepare("mnist", data_dir, mirror_dir)
    return data_dir


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store, made once: creating one costs seconds of migrations."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(_mlflow_template: Path, tmp_path: Path) -> str:
    """A fresh MLflow tracking URI (a copy of the template store) for one test."""
    import shutil

    import mlflow

    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    yield uri
    if mlflow.active_run():
        mlflow.end_run()
