"""Tests for runners.tune and bench.tuning*: search space, objective outcomes, studies on real MNIST.

The end-to-end tests train NoProp-DT for real, tiny: 256 training and 200 validation images, T=2,
one epoch, fp32 on the CPU. Those that start several processes or a PostgreSQL server are marked slow.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from bench import config as config_lib
from bench import tracking
from bench.engines import NonFiniteLoss
from bench.training import MethodResult
from bench.tuning import (
    ObjectiveError,
    SearchSpaceError,
    TrialObjective,
    TrialSetup,
    apply_params,
    check_space_against,
    parse_objectives,
    parse_space,
    suggest,
)
from bench.tuning_study import (
    StorageError,
    StudyIdentity,
    TrialCallback,
    code_change_warning,
    code_fingerprint,
    create_or_load_study,
    journal_path,
    make_pruner,
    mask_url,
    open_storage,
)
from runners import compare, tune

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "mnist", "--method", "noprop_dt", "--subset", "256", "--epochs-per-trial", "1",
        "--precision", "fp32", "--device", "cpu", "--set", "data.val_subset=200", "--set", "noprop.T=2",
        "--startup-trials", "2"]


def tiny_args(tmp_path: Path, data_dir: Path, storage: str, study: str, trials: int, *extra: str) -> list[str]:
    return [*TINY, "--data-dir", str(data_dir), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
            "--storage", storage, "--study-name", study, "--trials", str(trials),
            "--output-dir", str(tmp_path / "studies" / study), *extra]


def child_runs(tmp_path: Path, study: str):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return mlflow.search_runs(experiment_names=["noprop-bench-mnist"],
                              filter_string=f"tags.kind = 'trial' and tags.study_name = '{study}'")


def parent_runs(tmp_path: Path, study: str):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return mlflow.search_runs(experiment_names=["noprop-bench-mnist"],
                              filter_string=f"tags.kind = 'tune' and tags.study_name = '{study}'")


def assert_trials_accounted(study: optuna.Study, expected: int) -> None:
    trials = study.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(expected)), f"trial numbers {numbers}, expected 0..{expected - 1}"
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]


# ----------------------------------------------------------------------------------------- search space
GOOD_SPACE = """
params:
  noprop.schedule.family: {choices: [cosine, linear_logsnr, sigmoid]}
  noprop.schedule.s: {low: 1e-4, high: 0.2, log: true, when: {noprop.schedule.family: cosine}}
  noprop.schedule.alpha_min: {low: 1.0e-5, high: 0.1, log: true}
  noprop.schedule.steepness: {low: 2, high: 12, when: {noprop.schedule.family: [sigmoid]}}
  noprop.eta: {low: 1.0e-3, high: 1.0, log: true}
  noprop.T: {choices: [2, 3]}
  noprop.embedding: {choices: [onehot, learned, prototype]}
"""


def test_default_search_space_file_is_valid():
    space = tune.load_space(tune.DEFAULT_SPACE)
    assert {"noprop.schedule.family", "noprop.schedule.alpha_min", "noprop.schedule.snr_max",
            "noprop.eta"} <= set(space.keys)
    byname = {p.key: p for p in space.params}
    assert byname["noprop.schedule.alpha_min"].log and byname["noprop.schedule.snr_max"].log
    assert byname["noprop.eta"].log
    assert set(byname["noprop.schedule.family"].choices) == {"cosine", "linear_logsnr", "sigmoid"}
    assert check_space_against(space, config_lib.load(ROOT / "configs" / "mnist.yaml")) < 0.5


def test_space_types_conditions_and_sampling():
    space = parse_space(GOOD_SPACE)
    byname = {p.key: p for p in space.params}
    assert byname["noprop.schedule.steepness"].kind == "float"  # from the config default 6.0, not from `2`
    assert byname["noprop.schedule.s"].low == 1e-4  # 1e-4 without a dot is a number, not a string
    assert byname["noprop.T"].kind == "categorical"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    base = config_lib.load(ROOT / "configs" / "mnist.yaml")
    seen = set()
    for _ in range(40):
        trial = study.ask()
        params = suggest(trial, space)
        family = params["noprop.schedule.family"]
        seen.add(family)
        assert ("noprop.schedule.s" in params) == (family == "cosine")
        assert ("noprop.schedule.steepness" in params) == (family == "sigmoid")
        cfg = apply_params(base, params)
        assert cfg["noprop"]["schedule"]["family"] == family and cfg["noprop"]["T"] in (2, 3)
        study.tell(trial, 0.0)
    assert seen == {"cosine", "linear_logsnr", "sigmoid"}


@pytest.mark.parametrize("text, message", [
    ("params: {noprop.eta: {low: 0.1, high: 0.1}}", "is empty"),
    ("params: {noprop.eta: {low: 1.0, high: 0.1}}", "greater than high"),
    ("params: {noprop.embedding: {choices: []}}", "non-empty list"),
    ("params: {noprop.schedule.family: {choices: [cosine, ddpm]}}", "'ddpm' is not a valid value"),
    ("params: {noprop.schedule.alpha_min: {low: 0.1, high: 1.5}}", "expected a number in (0, 1)"),
    ("params: {noprop.eta: {low: 0.0, high: 1.0, log: true}}", "needs low > 0"),
    ("params: {noprop.etaa: {low: 0.1, high: 1.0}}", "unknown config key"),
    ("params: {train.epochs: {low: 1, high: 3}}", "set by runners.tune itself"),
    ("params: {data.train_subset: {low: 1, high: 3}}", "set by runners.tune itself"),
    ("params: {noprop.eta: {low: 0.1, hi: 1.0}}", "unknown field"),
    ("params: {noprop.T: {low: 1.5, high: 4}}", "integer bounds"),
    ("params: {noprop.schedule.s: {low: 0.01, high: 0.1, when: {noprop.schedule.family: cosine}}}",
     "not a categorical parameter listed before it"),
    ("params: {noprop.schedule.family: {choices: [cosine]}, "
     "noprop.schedule.s: {low: 0.01, high: 0.1, when: {noprop.schedule.family: sigmoid}}}", "not among the choices"),
    ("parameters: {}", "unknown top-level key"),
    ("params: {}", "non-empty mapping"),
    ("params: [", "not valid YAML"),
])
def test_invalid_search_space_is_refused_with_reason(text, message):
    with pytest.raises(SearchSpaceError) as err:
        parse_space(text, "space.yaml")
    assert message in str(err.value) and "space.yaml" in str(err.value)


def test_objectives():
    assert [o.name for o in parse_objectives("val_acc")] == ["val_acc"]
    multi = parse_objectives("val_acc,train_time")
    assert [o.direction for o in multi] == ["maximize", "minimize"]
    assert parse_objectives("val_acc, peak_memory")[1].metric == "peak_mem_train_mb"
    for bad, message in [("accuracy", "unknown objective"), ("train_time", "needs an accuracy objective"),
                         ("val_acc,val_acc", "twice"), ("", "empty")]:
        with pytest.raises(ObjectiveError, match=message):
            parse_objectives(bad)


def test_storage_urls():
    assert mask_url("postgresql+psycopg2://bench:s3cret@db.example:5432/optuna") == \
        "postgresql+psycopg2://bench:***@db.example:5432/optuna"
    assert mask_url("sqlite:///mlruns/optuna.db") == "sqlite:///mlruns/optuna.db"
    assert journal_path("journal:///tmp/x/study.log") == Path("/tmp/x/study.log")
    assert journal_path("runs/study.log") == Path("runs/study.log")
    assert journal_path("sqlite:///a.db") is None
    with pytest.raises(StorageError, match="neither a database URL"):
        open_storage("mlruns/optuna.db")
    with pytest.raises(StorageError, match="cannot open") as err:
        open_storage("postgresql+psycopg2://u:topsecret@127.0.0.1:1/none")
    assert "topsecret" not in str(err.value)


# ----------------------------------------------------------------------------------------- trial outcomes
def fake_run_method(method, cfg, data, device, precision, seed, *, experiment_id, parent_run_id, run_name=None,
                    evaluate_test=True, on_epoch=None, extra_tags=None):
    """Stands in for bench.training.run_method without training: accuracy from eta, NaN for eta > 0.5."""
    assert evaluate_test is False, "tuning must never evaluate the test set"
    with tracking.tracked_run(experiment_id, run_name, parent_run_id=parent_run_id,
                              tags={"kind": "method", **(extra_tags or {})}) as run:
        mlflow.log_params(config_lib.flatten(cfg))
        eta = cfg["noprop"]["eta"]
        if eta > 0.5:
            raise NonFiniteLoss(f"{method}: non-finite loss in epoch 1, block 2")
        acc = 0.9 if eta >= 0.1 else 0.1
        for epoch in range(1, cfg["train"]["epochs"] + 1):
            mlflow.log_metric("val_acc", acc, step=epoch)
            on_epoch(epoch, {"val_acc": acc})
        metrics = {"final_val_acc": acc, "best_val_acc": acc, "train_time_s": 1.0, "peak_mem_train_mb": 10.0,
                   "train_counted_peak_mb": 1.0}
        mlflow.log_metrics(metrics)
        return MethodResult(method, seed, run.info.run_id, "FINISHED", metrics)


def test_trial_outcomes_complete_rejected_nan_pruned(tmp_path):
    """One study, four enqueued trials: complete, invalid schedule (rejected), NaN loss (failed), pruned."""
    space = parse_space("""
params:
  noprop.schedule.family: {choices: [linear_logsnr]}
  noprop.schedule.alpha_min: {low: 1.0e-4, high: 0.9, log: true}
  noprop.schedule.snr_max: {low: 0.1, high: 1.0e+4, log: true}
  noprop.eta: {low: 1.0e-3, high: 1.0, log: true}
""")
    base = config_lib.load(ROOT / "configs" / "mnist.yaml", {"train.epochs": 3, "noprop.T": 2})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.setup(uri)
    experiment = tracking.experiment_id("noprop-bench-mnist", uri)
    objectives = parse_objectives("val_acc")
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    identity = StudyIdentity("mnist", "noprop_dt", "val_acc")
    study, existing = create_or_load_study(storage, "outcomes", objectives, identity, sampler=None,
                                           pruner=make_pruner(True, startup_trials=1))
    assert existing is None
    good = {"noprop.schedule.family": "linear_logsnr", "noprop.schedule.alpha_min": 1e-3,
            "noprop.schedule.snr_max": 100.0, "noprop.eta": 0.2}
    study.enqueue_trial(good)
    study.enqueue_trial({**good, "noprop.schedule.alpha_min": 0.6, "noprop.schedule.snr_max": 0.5})  # ends cross
    study.enqueue_trial({**good, "noprop.eta": 0.8})  # NaN
    study.enqueue_trial({**good, "noprop.eta": 0.01})  # worse than the median after epoch 1
    with tracking.tracked_run(experiment, "tune-outcomes", tags={"kind": "tune"}) as parent:
        setup = TrialSetup(space=space, base_cfg=base, objectives=objectives, method="noprop_dt", data=None,
                           device="cpu", precision="fp32", seed=0, experiment_id=experiment,
                           parent_run_id=parent.info.run_id, study_name="outcomes", prune=True)
        callback = TrialCallback(objectives, parent.info.run_id, experiment, 4, progress=False)
        study.optimize(TrialObjective(setup, run_method=fake_run_method), n_trials=4, catch=(NonFiniteLoss,),
                       callbacks=[callback])
    t = study.get_trials()
    assert [x.state.name for x in t] == ["COMPLETE", "PRUNED", "FAIL", "PRUNED"]
    assert t[0].value == 0.9 and t[0].user_attrs["outcome"] == "complete"
    assert t[1].user_attrs["outcome"] == "rejected"
    assert "SNR must strictly increase" in t[1].user_attrs["rejected_reason"]
    assert "non-finite loss in epoch 1, block 2" in t[2].user_attrs["fail_reason"]
    assert t[3].user_attrs["outcome"] == "pruned" and "after epoch 1/3" in t[3].user_attrs["pruned_reason"]
    assert callback.counts == {"complete": 1, "pruned": 1, "rejected": 1, "failed": 1}

    runs = mlflow.search_runs([experiment], filter_string="tags.kind = 'trial'").set_index("tags.trial_number")
    assert sorted(runs.index) == ["0", "1", "2", "3"]
    assert runs.loc["0", "status"] == "FINISHED" and runs.loc["0", "metrics.trial_value"] == 0.9
    assert runs.loc["0", "tags.optuna_state"] == "COMPLETE"
    rejected = runs.loc["1"]
    assert rejected["status"] == "KILLED" and rejected["tags.outcome"] == "rejected"
    assert "SNR must strictly increase" in rejected["tags.rejected_reason"]
    assert rejected["params.noprop.schedule.alpha_min"] == "0.6"
    assert runs.loc["2", "status"] == "FAILED" and runs.loc["2", "tags.optuna_state"] == "FAIL"
    assert "non-finite" in runs.loc["2", "tags.fail_reason"]
    pruned = runs.loc["3"]
    assert pruned["status"] == "KILLED" and pruned["tags.optuna_state"] == "PRUNED"
    assert "MedianPruner" in pruned["tags.pruned_reason"] and pd_isnull(pruned.get("tags.error"))


def pd_isnull(value) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def test_resumed_study_must_match(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    objectives = parse_objectives("val_acc")
    create_or_load_study(storage, "s", objectives, StudyIdentity("mnist", "noprop_dt", "val_acc"), None, None)
    with pytest.raises(StorageError, match="method: study has 'noprop_dt'"):
        create_or_load_study(storage, "s", objectives, StudyIdentity("mnist", "noprop_dt_decoder", "val_acc"),
                             None, None)
    with pytest.raises(StorageError, match="directions"):
        create_or_load_study(storage, "s", parse_objectives("val_acc,train_time"),
                             StudyIdentity("mnist", "noprop_dt", "val_acc"), None, None)


def test_code_fingerprint_guards_resumed_studies(tmp_path):
    """Trials of one study must come from one version of the training code, committed or not."""
    root = tmp_path / "repo"
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "engines.py").write_text("LR = 1\n")
    before = code_fingerprint(root)
    assert code_fingerprint(root) == before
    (root / "bench" / "engines.py").write_text("LR = 2\n")  # an uncommitted edit
    after = code_fingerprint(root)
    assert after != before
    assert len(code_fingerprint()) == 12  # the real repository

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/optuna.db"), study_name="s")
    assert code_change_warning(study, before) is None and study.user_attrs["code_fingerprint"] == before
    assert code_change_warning(study, before) is None
    warning = code_change_warning(study, after)
    assert warning and "training code changed" in warning and before in warning and after in warning


# ----------------------------------------------------------------------------------------- the CLI, for real
def test_cli_invalid_search_space_exits_2_before_any_trial(tmp_path, capsys):
    """No data, storage or MLflow is touched: the space is checked first."""
    storage = tmp_path / "optuna.db"
    for text, message in [("params: {noprop.schedule.family: {choices: [cosine, ddpm]}}", "'ddpm'"),
                          ("params: {noprop.eta: {low: 0.5, high: 0.5}}", "is empty")]:
        space = tmp_path / "space.yaml"
        space.write_text(text)
        with pytest.raises(SystemExit) as exc:
            tune.main([*tiny_args(tmp_path, tmp_path / "no-data", f"sqlite:///{storage}", "bad", 2),
                       "--search-space", str(space)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "search space" in err
        assert not storage.exists(), "the storage must not be created before the space is valid"


def test_cli_all_invalid_space_and_bad_args_exit_2(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("params: {noprop.schedule.alpha_min: {choices: [0.5, 0.6]}, "
                     "noprop.schedule.snr_max: {choices: [0.1, 0.2]}}")
    storage = tmp_path / "optuna.db"
    cases = [
        (["--search-space", str(space)], "every one of 300 random combinations is invalid"),
        (["--objective", "val_acc,speed"], "unknown objective"),
        (["--set", "noprop.T=0"], "noprop.T"),
        (["--n-jobs", "0"], "--n-jobs must be >= 1"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exc:
            tune.main([*tiny_args(tmp_path, tmp_path / "no-data", f"sqlite:///{storage}", "bad", 2), *extra])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert not storage.exists()


def test_tiny_study_end_to_end(tmp_path, mnist_data_dir):
    """3 real trials: Optuna storage, MLflow parent + child runs, best config loadable by runners.compare."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    assert tune.main(tiny_args(tmp_path, mnist_data_dir, storage, "e2e", 3, "--sampler-seed", "3")) == 0

    study = optuna.load_study(study_name="e2e", storage=storage)
    assert_trials_accounted(study, 3)
    assert {k: study.user_attrs[k] for k in ("dataset", "method", "objective")} == \
        {"dataset": "mnist", "method": "noprop_dt", "objective": "val_acc"}
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete, "no trial completed"

    parents = parent_runs(tmp_path, "e2e")
    assert len(parents) == 1
    parent = parents.iloc[0]
    assert parent["status"] == "FINISHED" and parent["tags.objective"] == "val_acc"
    assert parent["tags.storage"] == storage and parent["tags.best_trial"] == str(study.best_trial.number)
    assert parent["tags.code_fingerprint"] == study.user_attrs["code_fingerprint"] == code_fingerprint()
    assert all(t.user_attrs["code_fingerprint"] == code_fingerprint() for t in study.trials)

    runs = child_runs(tmp_path, "e2e")
    assert len(runs) == 3
    assert set(runs["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    by_number = runs.set_index("tags.trial_number")
    for t in study.trials:
        run = by_number.loc[str(t.number)]
        assert run["tags.mlflow.runName"] == f"trial-{t.number}"
        assert run["tags.optuna_state"] == t.state.name
        for key, value in t.params.items():
            assert run[f"params.{key}"] == str(value), key
        assert run["params.noprop.T"] == "2" and run["params.data.train_subset"] == "256"
        if t.state.name == "COMPLETE":
            assert run["metrics.trial_value"] == pytest.approx(t.value)
            assert run["metrics.final_val_acc"] == pytest.approx(t.value)
            assert t.user_attrs["mlflow_run_id"] == run["run_id"]
    assert "metrics.test_acc" not in runs.columns or runs["metrics.test_acc"].isna().all(), "test set was used"

    out = tmp_path / "studies" / "e2e"
    best_file = out / "best_config.yaml"
    assert best_file.is_file() and (out / "trials.csv").is_file()
    assert json.loads((out / "best_trial.json").read_text())["trial"] == study.best_trial.number
    assert {"optimization_history.png", "slice.png"} <= {p.name for p in (out / "plots").iterdir()}
    if len(complete) >= 2:
        assert (out / "plots" / "param_importances.png").is_file()
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent["run_id"])}
    assert {"best_config.yaml", "trials.csv", "plots", "search_space.yaml"} <= artifacts

    # runners.compare accepts the file, and it holds the best parameters on top of the base config
    args = compare.build_parser().parse_args(["--dataset", "mnist", "--config", str(best_file), "--quick"])
    cfg = compare.resolve_config(args)
    for key, value in study.best_trial.params.items():
        assert config_lib.flatten(cfg)[key] == value
    assert cfg["noprop"]["T"] == 2 and cfg["data"]["val_subset"] == 200  # the base config's --set overrides
    assert cfg["train"]["epochs"] == 1  # --quick
    assert yaml.safe_load(best_file.read_text())["train"]["epochs"] == 10  # base config, not the trial budget


def test_resume_adds_trials_to_the_same_study(tmp_path, mnist_data_dir):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    for _ in range(2):
        assert tune.main(tiny_args(tmp_path, mnist_data_dir, storage, "resume", 2, "--no-plots",
                                   "--sampler-seed", "0")) == 0
    study = optuna.load_study(study_name="resume", storage=storage)
    assert_trials_accounted(study, 4)
    first, second = study.trials[:2], study.trials[2:]
    assert [t.params for t in first] != [t.params for t in second], "the resumed run repeated the same draws"
    assert len(parent_runs(tmp_path, "resume")) == 2
    runs = child_runs(tmp_path, "resume")
    assert sorted(runs["tags.trial_number"].astype(int)) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------- several workers
def run_workers(tmp_path: Path, data_dir: Path, storage: str, study: str, per_worker: list[int],
                timeout: int = 600) -> None:
    """Start one `python -m runners.tune` process per entry, all on one storage, and wait for them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = []
    for i, n in enumerate(per_worker):
        log = open(tmp_path / f"worker{i}.log", "w")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "runners.tune", *tiny_args(tmp_path, data_dir, storage, study, n, "--no-plots")],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for i, (proc, log) in enumerate(procs):
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            log.close()
            if proc.poll() is None:
                proc.kill()
        assert rc == 0, f"worker {i} exited {rc}:\n{(tmp_path / f'worker{i}.log').read_text()[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_worker_processes_share_one_study(tmp_path, mnist_data_dir, kind):
    storage = f"sqlite:///{tmp_path}/optuna.db" if kind == "sqlite" else f"journal://{tmp_path}/study.log"
    run_workers(tmp_path, mnist_data_dir, storage, "workers", [2, 2])
    study = optuna.load_study(study_name="workers", storage=open_storage(storage))
    assert_trials_accounted(study, 4)
    assert len(parent_runs(tmp_path, "workers")) == 2
    assert sorted(child_runs(tmp_path, "workers")["tags.trial_number"].astype(int)) == [0, 1, 2, 3]


@pytest.mark.slow
def test_threads_n_jobs(tmp_path, mnist_data_dir):
    """--n-jobs 2: trials train in two threads of one process; each child run still hangs off the parent."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    assert tune.main(tiny_args(tmp_path, mnist_data_dir, storage, "threads", 4, "--n-jobs", "2", "--no-plots")) == 0
    study = optuna.load_study(study_name="threads", storage=storage)
    assert_trials_accounted(study, 4)
    parent = parent_runs(tmp_path, "threads").iloc[0]
    runs = child_runs(tmp_path, "threads")
    assert sorted(runs["tags.trial_number"].astype(int)) == [0, 1, 2, 3]
    assert set(runs["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    assert set(runs["status"]) <= {"FINISHED", "KILLED"} and parent["status"] == "FINISHED"


@pytest.mark.slow
def test_multi_objective_pareto_front(tmp_path, mnist_data_dir):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    assert tune.main(tiny_args(tmp_path, mnist_data_dir, storage, "multi", 3,
                               "--objective", "val_acc,train_time")) == 0
    study = optuna.load_study(study_name="multi", storage=storage)
    assert_trials_accounted(study, 3)
    assert study.metric_names == ["val_acc", "train_time"]
    assert all(not t.intermediate_values for t in study.trials), "multi-objective trials must not be pruned"
    out = tmp_path / "studies" / "multi"
    import pandas as pd

    front = pd.read_csv(out / "pareto_front.csv")
    assert set(front["trial"]) == {t.number for t in study.best_trials}
    best = json.loads((out / "best_trial.json").read_text())
    assert best["values"]["val_acc"] == max(front["val_acc"])
    assert (out / "plots" / "pareto_front.png").is_file()
    parent = parent_runs(tmp_path, "multi").iloc[0]
    assert "pareto_front.csv" in {a.path for a in mlflow.MlflowClient().list_artifacts(parent["run_id"])}


# ----------------------------------------------------------------------------------------- PostgreSQL
def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free 127.0.0.1 port (as user postgres when running as root)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl/initdb); install Debian's `postgresql` package")
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="noprop-pg-")  # /tmp, reachable by the postgres user (pytest's tmp is 0700)
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else None
        if as_user is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root without `runuser` to start the server as user postgres")
    password = "pg-test-secret"
    pwfile = Path(root) / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres")
    data = Path(root) / "data"
    port = _free_port()

    def pg(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, check=check, timeout=120)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
           f"--pwfile={pwfile}", "-E", "UTF8")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(Path(root) / "server.log"), "-w", "-t", "60",
           "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        detail = getattr(err, "stderr", "") or ""
        log = Path(root) / "server.log"
        detail += log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL server: {err} {detail}")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE optuna_test")
        conn.close()
        yield f"postgresql+psycopg2://postgres:{password}@127.0.0.1:{port}/optuna_test"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_postgresql(tmp_path, mnist_data_dir, postgres_url):
    """The several-machines path: two processes, one PostgreSQL-backed study, no trial lost or duplicated."""
    run_workers(tmp_path, mnist_data_dir, postgres_url, "pg-workers", [2, 1])
    study = optuna.load_study(study_name="pg-workers", storage=postgres_url)
    assert_trials_accounted(study, 3)
    parents = parent_runs(tmp_path, "pg-workers")
    assert len(parents) == 2
    assert all("pg-test-secret" not in s and ":***@" in s for s in parents["tags.storage"]), "password leaked"
    assert sorted(child_runs(tmp_path, "pg-workers")["tags.trial_number"].astype(int)) == [0, 1, 2]
