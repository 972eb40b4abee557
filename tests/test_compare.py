"""`python -m runners.compare` end to end on real MNIST (tiny subset), and every way it can go wrong."""
import math
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from analysis import tables
from bench.engines import NoPropEngine
from models.noprop import NoPropDT
from runners import compare

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--quick", "--precision", "fp32",
        "--set", "quick.train_subset=160", "--set", "quick.val_subset=64", "--set", "quick.test_subset=64",
        "--set", "noprop.T=2", "--set", "train.eval_batch_size=64"]


@pytest.fixture
def store(mlflow_uri):
    return mlflow_uri


def runs(uri: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["noprop-bench-mnist"], order_by=["start_time ASC"])


def run_compare(uri, data_dir, mirror, *extra):
    return compare.main(["--dataset", "mnist", "--data-dir", str(data_dir), "--data-mirror", str(mirror),
                         "--tracking-uri", uri, *TINY, *extra])


def test_quick_compare_logs_every_method(store, mnist_data_dir, mirror_dir, capsys):
    assert run_compare(store, mnist_data_dir, mirror_dir) == 0
    df = runs(store)
    parent = df[df["tags.kind"] == "compare"]
    children = df[df["tags.kind"] == "method"]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED"
    assert sorted(children["tags.method"]) == sorted(compare.config_lib.METHODS)
    assert (children["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    assert (children["status"] == "FINISHED").all()
    for col in ("test_acc", "best_val_acc", "train_time_s", "eval_time_s", "images_per_s",
                "peak_mem_train_mb", "train_counted_peak_mb", "params_total"):
        values = children[f"metrics.{col}"]
        assert values.notna().all() and (values >= 0).all(), col
    assert ((children["metrics.test_acc"] >= 0) & (children["metrics.test_acc"] <= 1)).all()
    assert (children["tags.peak_mem_kind"] == "cpu_peak_rss").all()
    noprop = children[children["tags.method"] == "noprop_dt"].iloc[0]
    for col in ("val_acc_deterministic", "val_acc_after_k/02", "val_block_mse/01", "val_last_block_from_noise_acc",
                "val_head_on_clean_acc", "val_embed_min_pairwise_dist", "schedule/loss_weight/02"):
        assert not math.isnan(noprop[f"metrics.{col}"]), col
    # per-epoch history has a step per epoch
    history = mlflow.MlflowClient().get_metric_history(noprop["run_id"], "val_acc")
    assert [m.step for m in history] == [1]
    # the comparison table is an artifact of the parent and printed
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent["run_id"].iloc[0],
                                                            artifact_path="comparison.csv"))
    row = table[table["method"] == "noprop_dt"].iloc[0]
    assert row["test_acc"] == pytest.approx(noprop["metrics.test_acc"])
    out = capsys.readouterr().out
    assert "backprop_blocks" in out and "test acc (%)" in out


def test_same_seed_reproduces_metrics(store, mnist_data_dir, mirror_dir):
    args = ["--methods", "noprop_dt", "backprop_cnn"]
    assert run_compare(store, mnist_data_dir, mirror_dir, *args) == 0
    assert run_compare(store, mnist_data_dir, mirror_dir, *args) == 0
    df = runs(store)
    kids = df[df["tags.kind"] == "method"].sort_values(["tags.method", "start_time"])
    for method, group in kids.groupby("tags.method"):
        a, b = group.iloc[0], group.iloc[1]
        for col in ("metrics.test_acc", "metrics.final_val_acc", "metrics.train_loss"):
            assert a[col] == b[col], (method, col)


def test_seeds_are_aggregated_as_mean_and_standard_error(store, mnist_data_dir, mirror_dir):
    assert run_compare(store, mnist_data_dir, mirror_dir, "--methods", "backprop_cnn", "--seeds", "3") == 0
    df = runs(store)
    kids = df[df["tags.kind"] == "method"]
    assert sorted(kids["tags.seed"].astype(int)) == [0, 1, 2]
    acc = kids["metrics.test_acc"].to_numpy()
    mean = sum(acc) / 3
    se = math.sqrt(sum((a - mean) ** 2 for a in acc) / 2) / math.sqrt(3)
    parent = df[df["tags.kind"] == "compare"]["run_id"].iloc[0]
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="comparison.csv"))
    assert table["seeds"].iloc[0] == 3
    assert table["test_acc"].iloc[0] == pytest.approx(mean)
    assert table["test_acc_se"].iloc[0] == pytest.approx(se)


def test_mean_se_by_hand():
    assert tables.mean_se(pd.Series([0.9, 0.92, 0.97])) == pytest.approx((0.93, 0.0208166599946613 ))
    mean, se = tables.mean_se(pd.Series([0.5]))
    assert mean == 0.5 and math.isnan(se)


def test_nan_loss_fails_that_method_only_and_keeps_earlier_epochs(store, mnist_data_dir, mirror_dir, monkeypatch,
                                                                  capsys):
    original = NoPropDT.block_loss
    calls = {"n": 0}

    def poisoned(self, t, x, y):
        weighted, mse = original(self, t, x, y)
        if self.training:
            calls["n"] += 1
            if calls["n"] > 4 and t == 2:  # epoch 1 = 2 batches × 2 blocks; poison block 2 in epoch 2
                return weighted * float("nan"), mse * float("nan")
        return weighted, mse

    monkeypatch.setattr(NoPropDT, "block_loss", poisoned)
    code = run_compare(store, mnist_data_dir, mirror_dir, "--methods", "noprop_dt", "backprop_cnn",
                       "--epochs", "2", "--set", "train.batch_size=80")
    assert code == 1
    err = capsys.readouterr().err
    assert "noprop_dt" in err and "epoch 2" in err and "block 2" in err
    df = runs(store)
    kids = df[df["tags.kind"] == "method"].set_index("tags.method")
    assert kids.loc["noprop_dt", "status"] == "FAILED"
    assert "block 2" in kids.loc["noprop_dt", "tags.error"]
    assert kids.loc["backprop_cnn", "status"] == "FINISHED"
    history = mlflow.MlflowClient().get_metric_history(kids.loc["noprop_dt", "run_id"], "val_acc")
    assert [m.step for m in history] == [1], "the finished epoch stays logged"
    assert df[df["tags.kind"] == "compare"]["status"].iloc[0] == "FAILED"


def test_ctrl_c_marks_runs_killed_and_keeps_finished_epochs(store, mnist_data_dir, mirror_dir, monkeypatch):
    original = NoPropEngine.train_epoch

    def interrupted(self, x, y, epoch, epochs, position=1):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, x, y, epoch, epochs, position)

    monkeypatch.setattr(NoPropEngine, "train_epoch", interrupted)
    assert run_compare(store, mnist_data_dir, mirror_dir, "--methods", "noprop_dt", "--epochs", "2") == 130
    df = runs(store)
    assert set(df["status"]) == {"KILLED"}
    child = df[df["tags.kind"] == "method"]["run_id"].iloc[0]
    assert [m.step for m in mlflow.MlflowClient().get_metric_history(child, "val_acc")] == [1]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["--dataset", "mnist", "--methods", "sgd"], "invalid choice: 'sgd'"),
        (["--dataset", "mnist", "--epochs", "0"], "train.epochs"),
        (["--dataset", "mnist", "--set", "noprop.T=0"], "noprop.T"),
        (["--dataset", "mnist", "--set", "train.lr=-0.1"], "train.lr"),
        (["--dataset", "mnist", "--set", "noprop.schedule.family=exp"], "noprop.schedule.family"),
        (["--dataset", "mnist", "--set", "noprop.embedding=random"], "noprop.embedding"),
        (["--dataset", "mnist", "--set", "train.momentum=0.9"], "unknown config key 'train.momentum'"),
    ],
)
def test_bad_input_exits_2_before_training(args, message, store, capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main([*args, "--tracking-uri", store])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    mlflow.set_tracking_uri(store)
    assert mlflow.search_runs(search_all_experiments=True).empty, "nothing may be tracked before the input is valid"


def test_corrupt_mirror_is_refused(store, mirror_dir, tmp_path, capsys):
    bad = tmp_path / "mirror"
    shutil.copytree(mirror_dir, bad, ignore=shutil.ignore_patterns("cifar-10-python.tar.gz"))
    target = bad / "train-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(SystemExit) as exc:
        compare.main(["--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--data-mirror", str(bad),
                      "--tracking-uri", store, *TINY])
    assert exc.value.code == 2
    assert "train-labels-idx1-ubyte.gz" in capsys.readouterr().err


def test_cli_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "runners.compare", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for option in ("--config", "--methods", "--epochs", "--seed", "--seeds", "--device", "--data-dir",
                   "--data-mirror", "--tracking-uri", "--quick", "--precision", "--set"):
        assert option in out


def test_sigterm_marks_runs_killed_and_keeps_finished_epochs(store, mnist_data_dir, mirror_dir):
    """A scheduler's or `kill`'s SIGTERM must not leave runs RUNNING forever."""
    import signal
    import time

    cmd = [sys.executable, "-m", "runners.compare", "--dataset", "mnist", "--data-dir", str(mnist_data_dir),
           "--data-mirror", str(mirror_dir), "--tracking-uri", store, *TINY,
           "--methods", "backprop_cnn", "--epochs", "500"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    client = mlflow.MlflowClient(tracking_uri=store)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            df = runs(store)
            kids = df[df["tags.kind"] == "method"] if len(df) else df
            if len(kids) and client.get_metric_history(kids["run_id"].iloc[0], "val_acc"):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the compare run never logged an epoch")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "terminated by signal SIGTERM" in err
    df = runs(store)
    assert set(df["status"]) == {"KILLED"}
    child = df[df["tags.kind"] == "method"].iloc[0]
    assert child["tags.error"] == "terminated by signal SIGTERM"
    assert len(client.get_metric_history(child["run_id"], "val_acc")) >= 1
