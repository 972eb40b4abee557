"""Tests for analysis.report: a small MLflow store with known runs (docs/TRACKING.md schema), no training.

The store holds, in experiment noprop-bench-mnist:
  * an older full-data compare run with one backprop_cnn run (seed 2)      — pooled by --runs all
  * an older --quick compare run                                            — never pooled with full runs
  * the latest compare run (FAILED, because one method failed) with
      noprop_dt, backprop_cnn, backprop_blocks × seeds 0, 1 (FINISHED, known metrics and histories),
      noprop_dt_decoder seed 0 FAILED after one epoch,
      backprop_blocks seed 1 an "older" run missing train_counted_peak_mb, eval_time_s and train_time_cum_s.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import report, tables
from analysis import runs as runs_lib

T0 = 1_700_000_000_000  # fixed start times (ms) so the report text is identical on every test run
CHILD_FIELDS = ("test_acc", "test_acc_deterministic", "best_val_acc", "epochs_completed", "train_time_s",
                "eval_time_s", "images_per_s", "peak_mem_train_mb", "train_counted_peak_mb", "params_total")

# (method, seed) → final metrics (fields as in CHILD_FIELDS; None = not logged)
FINAL = {
    ("noprop_dt", 0): (0.9512, 0.9420, 0.9560, 3, 30.0, 1.50, 300.0, 500.0, 50.5, 10_000),
    ("noprop_dt", 1): (0.9688, 0.9602, 0.9700, 3, 33.0, 1.70, 280.0, 520.0, 50.5, 10_000),
    ("backprop_cnn", 0): (0.9801, None, 0.9790, 3, 12.0, 0.40, 900.0, 300.0, 20.25, 5_000),
    ("backprop_cnn", 1): (0.9843, None, 0.9811, 3, 14.0, 0.60, 850.0, 310.0, 20.25, 5_000),
    ("backprop_blocks", 0): (0.9700, 0.9650, 0.9720, 3, 40.0, 2.00, 200.0, 600.0, 60.0, 10_000),
    ("backprop_blocks", 1): (0.9740, 0.9690, 0.9750, 3, 44.0, None, 190.0, 640.0, None, 10_000),
}
MISSING_RUN = ("backprop_blocks", 1)  # an "older" run: no eval_time_s, train_counted_peak_mb, train_time_cum_s


def _val_curve(best: float) -> list[float]:
    return [round(best - 0.30, 4), round(best - 0.05, 4), best]


def build_store(root: Path) -> dict[str, str]:
    """Log the runs above through the MLflow client API; returns ids by role."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("noprop-bench-mnist", artifact_location=(root / "artifacts").as_uri())
    client.create_experiment("noprop-bench-cifar10", artifact_location=(root / "artifacts-c").as_uri())
    ids: dict[str, str] = {}
    env_tags = {"git_commit": "0123456789abcdef", "python": "3.11.9", "data_source": "mirror",
                "version.torch": "2.14.1", "version.mlflow": "3.17.2", "hw.device": "cpu",
                "hw.cpu": "Test CPU 9000", "hw.cpu_cores": "2", "hw.torch_threads": "2"}
    config_params = {"train.lr": "0.001", "train.epochs": "3", "noprop.T": "3", "resolved_device": "cpu",
                     "resolved_precision": "fp32"}

    def parent(name: str, start: int, status: str, quick: bool, extra_tags=None, params=None) -> str:
        tags = {"kind": "compare", "dataset": "mnist", "quick": str(quick), **env_tags, **(extra_tags or {})}
        run = client.create_run(exp, start_time=start, tags=tags, run_name=name)
        rid = run.info.run_id
        client.log_batch(rid, params=[Param(k, v) for k, v in {**config_params, **(params or {})}.items()])
        client.log_text(rid, "train:\n  lr: 0.001\n  epochs: 3\nnoprop:\n  T: 3\n", "config.yaml")
        client.set_terminated(rid, status, end_time=start + 500_000)
        return rid

    def child(parent_id: str, method: str, seed: int, start: int, status: str = "FINISHED",
              final=None, val=None, times=None, error=None) -> str:
        tags = {"kind": "method", "method": method, "dataset": "mnist", "seed": str(seed), "precision": "fp32",
                "device": "cpu", "peak_mem_kind": "cpu_peak_rss", "mlflow.parentRunId": parent_id}
        if error:
            tags["error"] = error
        run = client.create_run(exp, start_time=start, tags=tags, run_name=f"{method}-seed{seed}")
        rid = run.info.run_id
        metrics = []
        for step, v in enumerate(val or [], start=1):
            metrics.append(Metric("val_acc", v, start + step * 1000, step))
        for step, v in enumerate(times or [], start=1):
            metrics.append(Metric("train_time_cum_s", v, start + step * 1000, step))
        for key, v in (final or {}).items():
            metrics.append(Metric(key, float(v), start + 9000, 0))
        client.log_batch(rid, metrics=metrics, params=[Param("method", method), Param("run_seed", str(seed))])
        client.set_terminated(rid, status, end_time=start + 10_000)
        return rid

    # older full-data compare run: one more backprop_cnn seed (pooled by --runs all)
    ids["old"] = parent("compare-mnist", T0, "FINISHED", False, params={"train.lr": "0.002"})
    old_final = {"test_acc": 0.9822, "best_val_acc": 0.9800, "epochs_completed": 3, "train_time_s": 13.0,
                 "eval_time_s": 0.5, "images_per_s": 870.0, "peak_mem_train_mb": 305.0,
                 "train_counted_peak_mb": 20.25, "params_total": 5_000}
    ids["old_child"] = child(ids["old"], "backprop_cnn", 2, T0 + 1000, final=old_final, val=_val_curve(0.9800),
                             times=[4.0, 8.0, 13.0])
    # older quick run: never pooled with full-data runs
    ids["quick"] = parent("compare-mnist-quick", T0 + 100_000, "FINISHED", True)
    child(ids["quick"], "noprop_dt", 0, T0 + 101_000, final={"test_acc": 0.25}, val=[0.25], times=[5.0])

    # the latest compare run: FAILED because noprop_dt_decoder hit a NaN
    start = T0 + 1_000_000
    ids["latest"] = parent("compare-mnist", start, "FAILED", False, extra_tags={
        "failed_methods": "noprop_dt_decoder: non-finite loss at epoch 2"})
    k = 0
    for (method, seed), values in FINAL.items():
        k += 1
        final = {f: v for f, v in zip(CHILD_FIELDS, values, strict=True) if v is not None}
        if method != "backprop_cnn":
            for blk in (1, 2, 3):
                final[f"test_acc_after_k/{blk:02d}"] = values[0] - 0.1 * (3 - blk)
        if method == "noprop_dt":
            for blk in (1, 2, 3):
                final[f"test_block_mse/{blk:02d}"] = 0.5 / 10 ** blk
        best = values[2]
        times = None if (method, seed) == MISSING_RUN else [values[4] / 3, 2 * values[4] / 3, values[4]]
        ids[f"{method}-{seed}"] = child(ids["latest"], method, seed, start + k * 1000, final=final,
                                        val=_val_curve(best), times=times)
    ids["failed"] = child(ids["latest"], "noprop_dt_decoder", 0, start + 50_000, status="FAILED",
                          final={"params_total": 11_000}, val=[0.61], times=[12.0],
                          error="NonFiniteLoss: noprop_dt_decoder epoch 2 block 3: loss is nan")
    # another experiment: a compare run that failed before its first method run, plus a tuning run
    other = client.create_experiment("noprop-bench-mnist-broken", artifact_location=(root / "artifacts-b").as_uri())
    run = client.create_run(other, start_time=T0, run_name="compare-mnist",
                            tags={"kind": "compare", "dataset": "mnist", "quick": "False",
                                  "error": "DataError: MNIST checksum mismatch"})
    client.set_terminated(run.info.run_id, "FAILED", end_time=T0 + 1000)
    ids["broken"] = run.info.run_id
    ids["uri"] = uri
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    return build_store(tmp_path_factory.mktemp("mlstore"))


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """No MLFLOW_TRACKING_URI from the environment, and relative defaults (mlruns/, reports/) inside tmp."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


def run_report(*args: str) -> int:
    return report.main(list(args))


def md_row(md: str, method: str, column: str = "seeds") -> dict[str, str]:
    """Cells of `method`'s row in the first Markdown table that has a column named `column`."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        header = [c.strip() for c in line.strip("|").split("|")] if line.startswith("|") else []
        if column in header and i + 1 < len(lines) and re.fullmatch(r"\|[\s:|-]+\|", lines[i + 1]):
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip("|").split("|")]
                if cells[0] == method:
                    return dict(zip(header, cells, strict=False))
            raise AssertionError(f"no row for {method} in the table with column {column!r}")
    raise AssertionError(f"no table with column {column!r}")


def expected(method: str, metric: str, scale: float, decimals: int) -> str:
    """mean ± s.e. by hand: s.e. = sample standard deviation / √n over the seeds that logged the metric."""
    i = CHILD_FIELDS.index(metric)
    vals = [v[i] for (m, _), v in FINAL.items() if m == method and v[i] is not None]
    if not vals:
        return "n/a"
    text = f"{statistics.fmean(vals) * scale:,.{decimals}f}"
    if len(vals) > 1:
        text += f" ± {statistics.stdev(vals) / math.sqrt(len(vals)) * scale:,.{decimals}f}"
    return text


# ----------------------------------------------------------------------------------------------------------------


def test_method_order_matches_config():
    """analysis.runs keeps its own copy of bench.config.METHODS (importing bench pulls in torch)."""
    import ast

    source = (Path(__file__).resolve().parents[1] / "bench" / "config.py").read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", None) == "METHODS" for t in n.targets))
    assert tuple(runs_lib.METHOD_ORDER) == tuple(ast.literal_eval(node.value))


def test_table_numbers_equal_logged_values(store):
    """The core check (fast, no figures): runs loaded from MLflow → aggregate → the logged numbers, mean ± s.e."""
    st = runs_lib.open_store(store["uri"])
    sel = runs_lib.select_runs(st, "mnist", "noprop-bench-mnist", "latest")
    assert list(sel.parents["run_id"]) == [store["latest"]]
    assert sorted(zip(sel.table_runs["method"], sel.table_runs["seed"], strict=False)) == sorted(FINAL)
    assert store["failed"] not in set(sel.table_runs["run_id"])
    for (method, seed), values in FINAL.items():
        row = sel.table_runs[(sel.table_runs["method"] == method) & (sel.table_runs["seed"] == seed)].iloc[0]
        for field, v in zip(CHILD_FIELDS, values, strict=True):
            if v is None:
                assert field not in row or not runs_lib.present(row[field])
            else:
                assert row[field] == pytest.approx(v, abs=0, rel=1e-12)
    table = tables.aggregate(sel.table_runs.assign(seed=sel.table_runs["seed"].astype(int)),
                             runs_lib.method_order(sel.table_runs["method"].unique()))
    assert list(table["method"]) == ["noprop_dt", "backprop_cnn", "backprop_blocks"]
    nd = table.set_index("method").loc["noprop_dt"]
    a, b = FINAL[("noprop_dt", 0)][0], FINAL[("noprop_dt", 1)][0]
    assert nd["test_acc"] == pytest.approx((a + b) / 2)
    assert nd["test_acc_se"] == pytest.approx(abs(a - b) / 2)  # n = 2: s.d./√2 = |a − b| / 2
    assert nd["seeds"] == 2


def test_report_table_failed_and_missing(store, tmp_path):
    out = tmp_path / "rep"
    assert run_report("--dataset", "mnist", "--tracking-uri", store["uri"], "--out", str(out),
                      "--format", "md", "--no-figures") == 0
    md = (out / "report.md").read_text()
    cols = {m: (h, s, dec) for m, h, s, dec in tables.COLUMNS}
    for method in ("noprop_dt", "backprop_cnn", "backprop_blocks"):
        row = md_row(md, method)
        assert row["seeds"] == "2"
        assert row["memory kind"] == "cpu_peak_rss"
        for metric in CHILD_FIELDS:
            heading, scale, dec = cols[metric]
            assert row[heading] == expected(method, metric, scale, dec), (method, metric)
    # hand-written spot checks of the formula
    assert md_row(md, "noprop_dt")["test acc (%)"] == "96.00 ± 0.88"
    assert md_row(md, "backprop_blocks")["test eval time (s)"] == "2.00"  # one of two seeds logged it
    assert md_row(md, "backprop_cnn")["test acc, no noise (%)"] == "n/a"
    # the paper's numbers, labelled
    assert "reported in the paper, not measured here" in md
    paper = md_row(md, "noprop_dt", "paper row")
    assert paper["test acc reported in the paper (%)"] == "99.47" and paper["paper row"] == "NoProp-DT"
    assert md_row(md, "backprop_cnn", "paper row")["test acc reported in the paper (%)"] == "99.46"
    assert "2503.24322" in md
    # the failed run and the parent's failure are reported
    assert store["failed"] in md
    assert "NonFiniteLoss: noprop_dt_decoder epoch 2 block 3: loss is nan" in md
    assert f"Compare run `{store['latest']}` is FAILED" in md
    failed_row = md_row(md, "noprop_dt_decoder", "in table")
    assert failed_row["status"] == "FAILED" and failed_row["in table"] == "no" and failed_row["epochs logged"] == "1"
    # missing metrics are named
    missing = md.split("missing data", 1)[1]
    run_id = store["backprop_blocks-1"]
    assert re.search(rf"backprop_blocks seed 1 \(run {run_id}\) did not log: .*`eval_time_s`", missing)
    assert "`train_counted_peak_mb`" in missing
    assert f"(run {run_id}) has no per-epoch `train_time_cum_s`" in missing
    assert "mean over 1 of 2 seeds" in md
    # setup behind the numbers
    for needle in ("0123456789abcdef", "Test CPU 9000", "version.torch", "2.14.1", "lr: 0.001"):
        assert needle in md
    assert "Figures were not drawn" in md and not (out / "figures" / "mnist-cost.png").exists()


def test_pooled_runs_all(store, tmp_path):
    out = tmp_path / "pooled"
    assert run_report("--dataset", "mnist", "--tracking-uri", store["uri"], "--runs", "all", "--out", str(out),
                      "--format", "md", "--no-figures") == 0
    md = (out / "report.md").read_text()
    row = md_row(md, "backprop_cnn")
    assert row["seeds"] == "3"
    vals = [FINAL[("backprop_cnn", 0)][0], FINAL[("backprop_cnn", 1)][0], 0.9822]
    se = statistics.stdev(vals) / math.sqrt(3)
    assert row["test acc (%)"] == f"{statistics.fmean(vals) * 100:.2f} ± {se * 100:.2f}"
    assert store["quick"] in md and "--quick run (subset of the data)" in md  # left out, and said so
    assert "train.lr" in md  # the pooled runs' configs differ


def test_nothing_to_report_exits_2(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "mlflow.db"
    code = run_report("--dataset", "mnist", "--tracking-uri", f"sqlite:///{missing}")
    err = capsys.readouterr().err
    assert code == 2
    assert "nothing to report" in err and str(missing) in err and "optuna" in err.lower()
    assert not missing.exists() and not (tmp_path / "reports").exists()  # looked, created nothing


def test_empty_experiment_exits_2(store, capsys):
    code = run_report("--dataset", "cifar10", "--tracking-uri", store["uri"])
    err = capsys.readouterr().err
    assert code == 2
    assert "noprop-bench-cifar10" in err and "no runs" in err


def test_dataset_all_reports_what_is_missing(store, tmp_path):
    out = tmp_path / "both"
    assert run_report("--dataset", "all", "--tracking-uri", store["uri"], "--out", str(out), "--format", "md",
                      "--no-figures") == 0
    md = (out / "report.md").read_text()
    assert "## CIFAR-10" in md and "Nothing to report for CIFAR-10" in md and "no runs" in md
    assert md_row(md, "noprop_dt")["seeds"] == "2"


def test_compare_run_without_method_runs(store, tmp_path):
    out = tmp_path / "broken"
    assert run_report("--dataset", "mnist", "--tracking-uri", store["uri"], "--experiment", "noprop-bench-mnist-broken",
                      "--out", str(out), "--format", "md", "--no-figures") == 0
    md = (out / "report.md").read_text()
    assert f"Compare run `{store['broken']}` is FAILED. Error: DataError: MNIST checksum mismatch" in md
    assert "The compare run has no method runs." in md and "No finished method run" in md
    gaps = md.split("missing data", 1)[1].split("###", 1)[0]
    assert "No config recorded on the compare run." in gaps and "No finished method run" in gaps


def test_unknown_run_id_is_reported(store, tmp_path, capsys):
    assert run_report("--dataset", "mnist", "--tracking-uri", store["uri"], "--runs", "deadbeef") == 2
    assert "deadbeef" in capsys.readouterr().err


@pytest.fixture(scope="module")
def full_report(store, tmp_path_factory) -> Path:
    """The complete report (figures, both formats, artifacts logged), generated once for the slow tests."""
    out = tmp_path_factory.mktemp("full") / "report"
    cwd = os.getcwd()
    os.chdir(out.parent)  # module scope runs before the autouse chdir: keep relative defaults out of the repo
    try:
        assert run_report("--dataset", "mnist", "--tracking-uri", store["uri"], "--out", str(out)) == 0
    finally:
        os.chdir(cwd)
    return out


@pytest.mark.slow
def test_figures_beside_markdown_and_logged(full_report, store):
    md = (full_report / "report.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert links == ["figures/mnist-accuracy-epoch.png", "figures/mnist-accuracy-time.png", "figures/mnist-cost.png",
                     "figures/mnist-acc-after-k.png", "figures/mnist-block-mse.png",
                     "figures/mnist-inference-noise.png"]
    for link in links:
        assert (full_report / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (full_report / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == len(links)
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # self-contained: embedded images, in-page links
    from mlflow import MlflowClient

    logged = {f.path for f in MlflowClient(tracking_uri=store["uri"]).list_artifacts(store["latest"], "report")}
    assert {f"report/{Path(p).name}" for p in links} | {"report/report.html", "report/report.md"} <= logged


@pytest.mark.slow
def test_deterministic(full_report, store, tmp_path):
    again = tmp_path / "again"
    assert run_report("--dataset", "mnist", "--tracking-uri", store["uri"], "--out", str(again)) == 0
    for name in ("report.md", "report.html"):
        assert (again / name).read_bytes() == (full_report / name).read_bytes(), name
    figs = sorted(p.name for p in (full_report / "figures").glob("*.png"))
    assert figs == sorted(p.name for p in (again / "figures").glob("*.png"))
    for name in figs:
        assert (again / "figures" / name).read_bytes() == (full_report / "figures" / name).read_bytes(), name


@pytest.mark.slow
def test_optuna_studies(store, tmp_path):
    import optuna
    from mlflow import MlflowClient

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="noprop_dt-mnist", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("dataset", "mnist")
    values = {0: 0.90, 1: 0.95, 2: 0.93, 3: 0.97}

    def objective(trial):
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        trial.suggest_int("T", 2, 10)
        if trial.number == 4:
            raise optuna.TrialPruned()
        return values[trial.number]

    study.optimize(objective, n_trials=5)
    lone = optuna.create_study(study_name="lonely-mnist", storage=storage)
    lone.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    optuna.create_study(study_name="other-cifar10", storage=storage)
    multi = optuna.create_study(study_name="mnist-noprop_dt-val_acc-train_time_s", storage=storage,
                                directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    multi.set_metric_names(["val_acc", "train_time_s"])
    pareto = {0: (0.9, 10.0), 1: (0.95, 20.0), 2: (0.85, 30.0)}  # trial 2 is dominated by trial 0
    multi.optimize(lambda t: (t.suggest_float("lr", 1e-4, 1e-2, log=True), pareto[t.number])[1], n_trials=3)
    client = MlflowClient(tracking_uri=store["uri"])
    exp = client.get_experiment_by_name("noprop-bench-mnist").experiment_id
    tune = client.create_run(exp, start_time=T0 + 2_000_000, run_name="tune-noprop_dt-mnist",
                             tags={"kind": "tune", "dataset": "mnist", "study_name": "noprop_dt-mnist"})
    client.set_terminated(tune.info.run_id, "FINISHED", end_time=T0 + 2_100_000)

    out = tmp_path / "rep"
    assert run_report("--dataset", "mnist", "--tracking-uri", store["uri"], "--optuna-storage", storage,
                      "--out", str(out), "--format", "md") == 0
    md = (out / "report.md").read_text()
    part = md.split("Optuna study `noprop_dt-mnist`", 1)[1].split("Optuna study `", 1)[0]
    assert "maximize objective; best value 0.97 (trial 3)" in part
    assert re.search(r"\| COMPLETE\s*\|\s*4\s*\|", part) and re.search(r"\| PRUNED\s*\|\s*1\s*\|", part)
    best = study.best_trial.params
    assert f"{best['lr']:.6g}" in part and re.search(rf"\| T\s*\|\s*{best['T']}\s*\|", part)
    assert "figures/study-noprop_dt-mnist-history.png" in part
    assert "figures/study-noprop_dt-mnist-importances.png" in part
    assert tune.info.run_id in part
    assert "need at least 2 complete trials; this study has 1" in md
    assert "other-cifar10" not in md  # another dataset's study
    mo = md.split("Optuna study `mnist-noprop_dt-val_acc-train_time_s`", 1)[1].split("Optuna study `", 1)[0]
    assert "maximize val_acc, minimize train_time_s; 2 trial(s) on the Pareto front" in mo
    assert md_row(mo, "0", "train_time_s")["val_acc"] == "0.9" and md_row(mo, "1", "train_time_s")["val_acc"] == "0.95"
    assert "figures/study-mnist-noprop_dt-val_acc-train_time_s-train_time_s-history.png" in mo
    assert "Parameter importances (val_acc) (fANOVA, seed 0)" in mo
    logged = {f.path for f in client.list_artifacts(tune.info.run_id, "report")}
    assert "report/study-noprop_dt-mnist-history.png" in logged


@pytest.fixture
def browser() -> str:
    """Chromium from Debian's package; the test is skipped (before the report is built) without it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no Chromium on the PATH (Debian: apt-get install -y chromium)")
    return found


@pytest.mark.slow
def test_html_opens_in_headless_chromium(browser, full_report, tmp_path):
    page = (full_report / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars"]
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run([browser, *flags, f"--user-data-dir={tmp_path / 'profile-dom'}",
                          "--dump-dom", page], capture_output=True, text=True, timeout=120, env=env)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<table" in html and "noprop_dt" in html and "96.00 ± 0.88" in html
    assert "reported in the paper, not measured here" in html
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]{1000,})"', html)
    assert len(images) >= 5

    artifacts = Path(__file__).resolve().parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    done = subprocess.run([browser, *flags, f"--user-data-dir={tmp_path / 'profile-shot'}",
                           f"--screenshot={shot}", "--window-size=1400,3000", page],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    from PIL import Image

    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000) or []
        assert rgb.size == (1400, 3000)
        assert len(colours) > 50  # text, tables and plots, not a blank page
        non_white = sum(n for n, c in colours if c != (255, 255, 255))
        assert non_white > 0.02 * 1400 * 3000


def test_help_runs():
    done = subprocess.run([sys.executable, "-m", "analysis.report", "--help"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0
    for option in ("--dataset", "--tracking-uri", "--experiment", "--runs", "--out", "--format",
                   "--optuna-storage"):
        assert option in done.stdout
