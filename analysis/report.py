"""Results report from the MLflow runs of `runners.compare` (and any Optuna studies): HTML and Markdown.

    python -m analysis.report --dataset mnist                    # the latest MNIST comparison
    python -m analysis.report --dataset all --runs all           # every comparison, pooled over seeds
    python -m analysis.report --dataset cifar10 --runs <parent run id> --format md

Writes reports/<name>/report.html (self-contained, images embedded) and report.md with its PNGs in
reports/<name>/figures/, and logs the figures (and the report) as artifacts of the parent run(s) they
describe. Exit code 0 when at least one run or study was reported, 2 when there was nothing to report.
See docs/REPORT.md.
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from analysis import document as d
from analysis import runs as runs_lib
from analysis import studies as studies_lib
from analysis import tables

# Reported elsewhere, NOT measured here: test accuracy (%) from Li, Teh & Pascanu (2025), Table 1.
PAPER = {
    "citation": "Li, Teh & Pascanu (2025), “NoProp: Training Neural Networks without Back-propagation or "
                "Forward-propagation”, arXiv:2503.24322",
    "test_acc_percent": {
        "mnist": {"NoProp-DT": 99.47, "Backprop": 99.46},
        "cifar10": {"NoProp-DT": 79.25, "Backprop": 79.92},
    },
}
# Which paper row each of our methods is set beside (the closest counterpart, not the same experiment).
PAPER_ROW = {"noprop_dt": "NoProp-DT", "noprop_dt_decoder": "NoProp-DT", "backprop_cnn": "Backprop",
             "backprop_blocks": "Backprop"}
DATASET_TITLE = {"mnist": "MNIST", "cifar10": "CIFAR-10"}
HISTORY_KEYS = ["val_acc", "train_time_cum_s"]
SETUP_TAGS = ("git_commit", "python", "data_source", "quick")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Write an HTML + Markdown report (tables, figures, setup, Optuna studies) from the MLflow "
                    "runs of runners.compare.",
        epilog="Exit status: 0 when at least one run or study was reported, 2 when there was nothing to report "
               "(the message says where it looked). See docs/REPORT.md.",
    )
    p.add_argument("--dataset", required=True, choices=[*runs_lib.DATASETS, "all"],
                   help="which dataset's runs to report; all = one section per dataset")
    p.add_argument("--tracking-uri", default=None,
                   help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or {runs_lib.DEFAULT_URI})")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment to read (default: noprop-bench-<dataset>; with --dataset all it is "
                        "searched for both datasets)")
    p.add_argument("--runs", default="latest", metavar="latest|all|ID[,ID...]",
                   help="latest = the most recently started compare run; all = every ended compare run of the "
                        "dataset, finished method runs pooled by method over seeds (full-data runs only, --quick "
                        "runs when there are no others); or compare parent run id(s), comma-separated, pooled "
                        "(default: latest)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: reports/<dataset>-<first 8 characters of the parent run id(s)>, "
                        "or reports/<dataset>-pooled with --runs all)")
    p.add_argument("--format", choices=("html", "md", "both"), default="both", help="what to write (default: both)")
    p.add_argument("--optuna-storage", default=None,
                   help=f"Optuna storage URL to read studies from (default: {studies_lib.DEFAULT_STORAGE} "
                        "when that file exists)")
    p.add_argument("--no-figures", action="store_true",
                   help="tables and text only: no figures drawn (quicker; nothing logged to MLflow then)")
    p.add_argument("--no-log-artifacts", action="store_true",
                   help="do not log the figures and report as artifacts of the runs they describe")
    return p


# ----------------------------------------------------------------------------------------------------------------
# small formatting helpers (fixed formats: the same runs give the same text)


def when(ms) -> str:
    if not runs_lib.present(ms):
        return "n/a"
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pct(v) -> str:
    return f"{float(v) * 100:.2f}" if runs_lib.present(v) else "n/a"


def text(v) -> str:
    return str(v) if runs_lib.present(v) else ""


def expected_metrics(method: str) -> list[str]:
    """Final metrics the table uses that a run of `method` should have logged."""
    out = [m for m, *_ in tables.COLUMNS]
    if method not in runs_lib.CHAIN_METHODS:
        out.remove("test_acc_deterministic")  # no denoising chain, nothing to run without noise
    return out


def suffix_columns(frame: pd.DataFrame, prefix: str) -> list[tuple[int, str]]:
    """[(k, column)] for columns `<prefix>/<kk>`, sorted by k."""
    pat = re.compile(rf"^{re.escape(prefix)}/(\d+)$")
    found = [(int(m.group(1)), c) for c in frame.columns if (m := pat.match(str(c)))]
    return sorted(found)


# ----------------------------------------------------------------------------------------------------------------
# one dataset


class Section:
    """Builds the blocks and figures for one dataset from a runs_lib.Selection."""

    def __init__(self, store: runs_lib.Store | None, sel: runs_lib.Selection, fig_dir: Path, draw: bool = True):
        self.store, self.sel, self.fig_dir, self.draw = store, sel, fig_dir, draw
        self.blocks: list = []
        self.figures: list[Path] = []
        self.missing: list[str] = list(sel.problems)
        self.title = DATASET_TITLE.get(sel.dataset, sel.dataset)
        self.methods = runs_lib.method_order(sel.children["method"].dropna().unique()) if not sel.children.empty \
            else []

    def add(self, *blocks) -> None:
        self.blocks.extend(b for b in blocks if b is not None)

    def figure(self, path: Path | None, caption: str) -> None:
        if path is not None:
            self.figures.append(path)
            self.add(d.Figure(path, caption))

    def build(self) -> list:
        sel = self.sel
        self.add(d.Heading(self.title, 2))
        if not sel.found_anything:
            why = " ".join(sel.problems) or f"no compare runs in {sel.looked}."
            self.add(d.Para(f"Nothing to report for {self.title}: {why}", "warning"))
            return self.blocks
        self.selection()
        self.hist = self.load_history()
        self.comparison()
        self.paper()
        if self.draw:
            self.curves()
            self.diagnostics()
        self.run_list()
        main, self.blocks = self.blocks, []
        self.setup()  # built before the missing-data list (it finds gaps too), shown after it
        setup, self.blocks = self.blocks, main
        self.missing_data()
        self.add(*setup)
        return self.blocks

    # -- which runs -------------------------------------------------------------------------------------------
    def selection(self) -> None:
        sel, parents = self.sel, self.sel.parents
        if len(parents) == 1 and sel.mode != "all":
            p = parents.iloc[0]
            how = "the latest compare run" if sel.mode == "latest" else "compare run"
            self.add(d.Para(f"Runs: {how} `{p['run_name']}` (run id `{p['run_id']}`) in experiment "
                            f"`{sel.experiment}`, started {when(p['start_ms'])}, status {p['status']}; "
                            f"{len(sel.children)} method run(s)."))
        else:
            how = "every ended compare run" if sel.mode == "all" else "the compare runs asked for"
            self.add(d.Para(f"Runs: {how} in experiment `{sel.experiment}`, pooled: finished method runs are "
                            "grouped by method over seeds (if a seed was run more than once, the latest run "
                            "of it counts)."))
            counts = sel.children.groupby("parent_run_id").size() if not sel.children.empty else {}
            self.add(d.Table(pd.DataFrame({
                "compare run": parents["run_name"].map(text), "run id": parents["run_id"],
                "started": parents["start_ms"].map(when), "status": parents["status"].map(text),
                "quick": parents.get("tags.quick", pd.Series("", index=parents.index)).map(text),
                "method runs": [str(int(counts.get(r, 0))) for r in parents["run_id"]]}), "Pooled compare runs"))
        for _, p in parents.iterrows():
            if p["status"] != "FINISHED":
                err = f" Error: {p['error']}" if runs_lib.present(p["error"]) else ""
                self.add(d.Para(f"Compare run `{p['run_id']}` is {p['status']}.{err}", "warning"))
                self.missing.append(f"Compare run {p['run_id']} is {p['status']}.{err}")
            failed = p.get("tags.failed_methods")
            if runs_lib.present(failed):
                self.add(d.Para(f"Compare run `{p['run_id']}` recorded failed methods: {failed}", "warning"))
        quick = parents.get("tags.quick", pd.Series(dtype=object)) == "True"
        if quick.any():
            self.add(d.Para("--quick run(s): a subset of the data and few epochs, a smoke test of the pipeline; "
                            "the numbers are not comparable with full-data training or with the paper.", "warning"))
        if sel.left_out:
            self.add(d.Para("Runs seen but not in the table:", "note"), d.Bullets(sel.left_out, "note"))

    def load_history(self) -> pd.DataFrame:
        ch = self.sel.children
        if ch.empty or self.store is None:
            return runs_lib.wide_history(pd.DataFrame())
        usable = ch[ch["method"].notna() & ch["seed"].notna()]
        return runs_lib.wide_history(runs_lib.history(self.store, usable, HISTORY_KEYS))

    # -- numbers ----------------------------------------------------------------------------------------------
    def table_frame(self) -> pd.DataFrame:
        """Finished runs with every table column present (NaN where not logged), for tables.aggregate."""
        runs = self.sel.table_runs.copy()
        for metric, *_ in tables.COLUMNS:
            if metric not in runs:
                runs[metric] = float("nan")
        runs["seed"] = runs["seed"].astype(int)
        return runs

    def comparison(self) -> None:
        self.add(d.Heading(f"{self.title}: comparison", 3))
        if self.sel.table_runs.empty:
            self.add(d.Para("No finished method run: there is no comparison table (see the run list below).",
                            "warning"))
            self.missing.append("No finished method run, so no comparison table.")
            return
        runs = self.table_frame()
        order = runs_lib.method_order(runs["method"].unique())
        self.numeric = tables.aggregate(runs, order)
        self.add(d.Table(tables.display(self.numeric),
                         "Measured here: mean ± standard error over seeds (sample standard deviation / √n; no ± "
                         "with one seed). `seeds` = number of seeds averaged."))
        notes = ["n/a = not logged. `test acc, no noise` applies only to models with a denoising chain "
                 "(NoProp-DT variants, backprop-blocks); `backprop_cnn` has none.",
                 "Peak memory is of the kind in the `memory kind` column: `cpu_peak_rss` = peak resident set size "
                 "of the process on CPU, `cuda_max_allocated` = peak CUDA memory allocated by PyTorch.",
                 "Times are wall-clock seconds on the machine in the setup section; test eval time is test-set "
                 "inference alone."]
        for metric, heading, *_ in tables.COLUMNS:
            for method, group in runs.groupby("method", sort=False):
                have, n = int(group[metric].notna().sum()), len(group)
                if 0 < have < n:
                    notes.append(f"{method}: `{heading}` is the mean over {have} of {n} seeds (not logged by "
                                 "the others).")
        self.add(d.Bullets(notes, "note"))

    def paper(self) -> None:
        ref = PAPER["test_acc_percent"].get(self.sel.dataset)
        if not ref:
            return
        self.add(d.Heading(f"{self.title}: paper reference (reported in the paper, not measured here)", 3))
        rows = []
        measured: dict[str, str] = {}
        if getattr(self, "numeric", None) is not None:
            shown = tables.display(self.numeric)
            if "test acc (%)" in shown:
                measured = dict(zip(shown["method"], shown["test acc (%)"], strict=False))
        for method in self.methods:
            row = PAPER_ROW.get(method)
            rows.append({"our method": method, "test acc measured here (%)": measured.get(method, "n/a"),
                         "paper row": row or "—",
                         "test acc reported in the paper (%)": f"{ref[row]:.2f}" if row in ref else "—"})
        if not rows:
            rows = [{"our method": "—", "test acc measured here (%)": "n/a", "paper row": k,
                     "test acc reported in the paper (%)": f"{v:.2f}"} for k, v in ref.items()]
        self.add(d.Table(pd.DataFrame(rows), "Right-hand columns: reported in the paper, not measured here."),
                 d.Para(f"Source of the paper numbers: {PAPER['citation']} (test accuracy; the paper trains for "
                        "far longer than a quick run). Each of our methods is set beside its closest row in the "
                        "paper; the architectures and training budgets are not guaranteed to be identical.",
                        "source"))

    # -- figures ----------------------------------------------------------------------------------------------
    def curves(self) -> None:
        from analysis import plots

        self.add(d.Heading(f"{self.title}: training curves and cost", 3))
        ds = self.sel.dataset
        ids = set(self.sel.table_runs["run_id"]) if not self.sel.table_runs.empty else set()
        curves = self.hist[self.hist["run_id"].isin(ids)]
        have = any(c in curves for c in HISTORY_KEYS)
        if curves.empty or not have:
            self.add(d.Para("No per-epoch history (`val_acc`) logged for the finished runs: no training curves.",
                            "warning"))
        else:
            self.figure(plots.accuracy_vs_epoch(curves, self.methods, self.fig_dir / f"{ds}-accuracy-epoch.png",
                                                title=f"{self.title}: validation accuracy per epoch"),
                        "Validation accuracy per epoch (`val_acc`): mean over seeds, band = ± standard error.")
            path = plots.accuracy_vs_time(curves, self.methods, self.fig_dir / f"{ds}-accuracy-time.png",
                                          title=f"{self.title}: validation accuracy against training time")
            if path is None:
                self.add(d.Para("No `train_time_cum_s` history (older runs): no accuracy-against-time figure.",
                                "warning"))
            self.figure(path, "Validation accuracy against cumulative training wall-clock (`train_time_cum_s`); "
                              "one line per run.")
        if not self.sel.table_runs.empty:
            runs = self.table_frame()
            path = plots.cost_bars(runs, self.methods, self.fig_dir / f"{ds}-cost.png",
                                   title=f"{self.title}: training cost")
            self.figure(path, "Training time and peak training memory per method (mean over seeds, whiskers ± "
                              "standard error); the memory kind is in the axis label.")
            if path is None:
                self.add(d.Para("Neither `train_time_s` nor `peak_mem_train_mb` logged: no cost figure.", "warning"))

    def diagnostics(self) -> None:
        from analysis import plots

        self.add(d.Heading(f"{self.title}: NoProp diagnostics", 3))
        ds = self.sel.dataset
        runs = self.sel.table_runs
        if runs.empty:
            self.add(d.Para("No finished runs: no diagnostics.", "warning"))
            return
        drawn = False
        for prefix, where in (("test_acc_after_k", "test"), ("val_acc_after_k", "validation, last epoch")):
            cols = suffix_columns(runs, prefix)
            if cols:
                long = self._long(runs, cols, "k", "acc", 100.0)
                self.figure(plots.mean_lines(long, self.methods, self.fig_dir / f"{ds}-acc-after-k.png",
                                             x="k", y="acc", xlabel="blocks used (k)",
                                             ylabel=f"accuracy after k blocks (%, {where})",
                                             title=f"{self.title}: accuracy after k blocks"),
                            f"Accuracy when the chain stops after k blocks (`{prefix}/<kk>`, {where}); mean ± s.e. "
                            "over seeds. NoProp-DT reads out the head on z_k; backprop-blocks reads out block k's "
                            "own class logits, which end-to-end training asks only of block T.")
                drawn = True
                break
        else:
            self.add(d.Para("Accuracy after k blocks (`test_acc_after_k/<kk>`, `val_acc_after_k/<kk>`) was not "
                            "logged by these runs.", "note"))
        for prefix, where in (("test_block_mse", "test"), ("val_block_mse", "validation, last epoch")):
            cols = suffix_columns(runs, prefix)
            if cols:
                long = self._long(runs, cols, "t", "mse", 1.0)
                self.figure(plots.mean_lines(long, self.methods, self.fig_dir / f"{ds}-block-mse.png",
                                             x="t", y="mse", xlabel="block t", logy=True,
                                             ylabel=f"denoising error (MSE, {where})",
                                             title=f"{self.title}: per-block denoising error"),
                            f"Per-block denoising error (`{prefix}/<tt>`, {where}; log scale); NoProp-DT only.")
                drawn = True
                break
        else:
            self.add(d.Para("Per-block denoising error (`test_block_mse/<tt>`) was not logged by these runs.", "note"))
        both = runs.dropna(subset=[c for c in ("test_acc", "test_acc_deterministic") if c in runs]) \
            if {"test_acc", "test_acc_deterministic"} <= set(runs.columns) else runs.iloc[0:0]
        if not both.empty:
            long = pd.concat([
                pd.DataFrame({"method": both["method"], "seed": both["seed"], "inference": "with noise",
                              "acc": both["test_acc"] * 100.0}),
                pd.DataFrame({"method": both["method"], "seed": both["seed"], "inference": "without noise",
                              "acc": both["test_acc_deterministic"] * 100.0}),
            ], ignore_index=True)
            self.figure(plots.noise_bars(long, self.methods, self.fig_dir / f"{ds}-inference-noise.png",
                                         title=f"{self.title}: inference with and without noise"),
                        "Test accuracy with noise at every step (`test_acc`, the paper's inference) and without "
                        "(`test_acc_deterministic`); mean over seeds, whiskers ± s.e.")
            drawn = True
        else:
            self.add(d.Para("Test accuracy without inference noise (`test_acc_deterministic`) was not logged.",
                            "note"))
        if not drawn:
            self.missing.append("No NoProp diagnostics logged (no NoProp-DT or backprop-blocks runs, or older runs).")

    @staticmethod
    def _long(runs: pd.DataFrame, cols: list[tuple[int, str]], x: str, y: str, scale: float) -> pd.DataFrame:
        parts = [pd.DataFrame({"method": runs["method"], "seed": runs["seed"], x: k, y: runs[c] * scale})
                 for k, c in cols]
        return pd.concat(parts, ignore_index=True).dropna(subset=[y])

    # -- runs, gaps, setup --------------------------------------------------------------------------------------
    def run_list(self) -> None:
        self.add(d.Heading(f"{self.title}: runs", 3))
        ch = self.sel.children
        if ch.empty:
            self.add(d.Para("The compare run has no method runs.", "warning"))
            self.missing.append("The selected compare run(s) have no method runs.")
            return
        epochs = (self.hist.dropna(subset=["val_acc"]).groupby("run_id")["step"].nunique()
                  if "val_acc" in self.hist else pd.Series(dtype=int))
        used = set(self.sel.table_runs["run_id"]) if not self.sel.table_runs.empty else set()
        frame = pd.DataFrame({
            "method": ch["method"].map(text), "seed": ch["seed"].map(text), "status": ch["status"].map(text),
            "in table": ["yes" if r in used else "no" for r in ch["run_id"]],
            "epochs logged": [str(int(epochs.get(r, 0))) for r in ch["run_id"]],
            "test acc (%)": ch["test_acc"].map(pct) if "test_acc" in ch else "n/a",
            "run id": ch["run_id"], "error": ch["error"].map(text),
        })
        self.add(d.Table(frame, "Every method run of the selected compare run(s)"))

    def missing_data(self) -> None:
        gaps = list(self.missing)
        for _, r in self.sel.table_runs.iterrows():
            absent = [m for m in expected_metrics(r["method"]) if m not in r or not runs_lib.present(r[m])]
            if absent:
                gaps.append(f"{r['method']} seed {r['seed']} (run {r['run_id']}) did not log: "
                            f"{', '.join(f'`{m}`' for m in absent)}.")
            if "peak_mem_kind" not in r or not runs_lib.present(r["peak_mem_kind"]):
                gaps.append(f"{r['method']} seed {r['seed']} (run {r['run_id']}) has no `peak_mem_kind` tag.")
            h = self.hist[self.hist["run_id"] == r["run_id"]]
            for key in HISTORY_KEYS:
                if key not in h or h[key].dropna().empty:
                    gaps.append(f"{r['method']} seed {r['seed']} (run {r['run_id']}) has no per-epoch `{key}`.")
        for _, r in self.sel.children.iterrows():
            if r["status"] != "FINISHED":
                err = f" ({r['error']})" if runs_lib.present(r["error"]) else ""
                gaps.append(f"{r['method']} seed {r['seed']} (run {r['run_id']}) is {r['status']}{err}: its final "
                            "metrics are missing; epochs it finished are in the run list.")
        self.add(d.Heading(f"{self.title}: missing data", 3))
        if gaps:
            self.add(d.Bullets(gaps, "warning"))
        else:
            self.add(d.Para("Nothing missing: every finished run logged every metric the table and figures use."))
        self.missing = gaps

    def setup(self) -> None:
        self.add(d.Heading(f"{self.title}: setup behind the numbers", 3))
        parents = self.sel.parents
        keys = set(SETUP_TAGS)
        for c in parents.columns:
            if c.startswith(("tags.hw.", "tags.version.")):
                keys.add(c[len("tags."):])
        keys_sorted = [k for k in SETUP_TAGS] + sorted(k for k in keys if k.startswith("hw.")) + \
            sorted(k for k in keys if k.startswith("version."))
        params = ["resolved_device", "resolved_precision"]
        rows = []
        for k in keys_sorted:
            vals = [text(p.get(f"tags.{k}")) for _, p in parents.iterrows()]
            if any(vals):
                rows.append([k, *vals])
        for k in params:
            vals = [text(p.get(f"params.{k}")) for _, p in parents.iterrows()]
            if any(vals):
                rows.append([f"param {k}", *vals])
        if not rows:
            self.add(d.Para("The compare run(s) logged no setup tags (`hw.*`, `version.*`, `git_commit`).",
                            "warning"))
            self.missing.append("No setup tags on the compare run(s).")
        else:
            cols = ["setting", *(["value"] if len(parents) == 1 else [f"run {r[:8]}" for r in parents["run_id"]])]
            self.add(d.Table(pd.DataFrame(rows, columns=cols),
                             "Device and hardware (`hw.*`), package versions (`version.*`), code version "
                             "(`git_commit`) of the compare run(s)"))
        if len(parents) > 1:
            pcols = sorted(c for c in parents.columns if c.startswith("params."))
            diff = [[c[len("params."):], *[text(v) for v in parents[c]]] for c in pcols
                    if parents[c].map(text).nunique() > 1]
            if diff:
                self.add(d.Table(pd.DataFrame(diff, columns=["config key", *[f"run {r[:8]}" for r in
                                                                              parents["run_id"]]]),
                                 "Config keys that differ between the pooled compare runs"),
                         d.Para("The pooled runs were not all configured alike; see the keys above.", "warning"))
        latest = parents.iloc[-1]
        config = runs_lib.load_text_artifact(self.store, latest["run_id"], "config.yaml") if self.store else None
        if config is not None:
            self.add(d.Code(config, f"Resolved config (`config.yaml` of compare run `{latest['run_id']}`)"))
        else:
            pcols = sorted(c for c in parents.columns if c.startswith("params."))
            if pcols:
                self.add(d.Para(f"No `config.yaml` artifact on compare run `{latest['run_id']}`; its params:", "note"),
                         d.Table(pd.DataFrame({"param": [c[len("params."):] for c in pcols],
                                               "value": [text(latest[c]) for c in pcols]})))
            else:
                self.add(d.Para("No config: neither a `config.yaml` artifact nor params on the compare run.",
                                "warning"))
                self.missing.append("No config recorded on the compare run.")


# ----------------------------------------------------------------------------------------------------------------
# Optuna studies


def study_blocks(info: studies_lib.StudyInfo, fig_dir: Path, tune_runs: pd.DataFrame,
                 draw: bool = True) -> tuple[list, list[Path]]:
    blocks: list = [d.Heading(f"Optuna study `{info.name}`", 3)]
    figures: list[Path] = []
    study = info.study
    line, best_table = studies_lib.best(study)
    blocks.append(d.Para(f"Dataset: {info.dataset or 'not recorded'}; {line}."))
    attrs = {k: v for k, v in sorted(study.user_attrs.items())}
    if attrs:
        blocks.append(d.Table(pd.DataFrame({"attribute": list(attrs),
                                            "value": [studies_lib.fmt_value(v) for v in attrs.values()]}),
                              "Study attributes"))
    blocks.append(d.Table(studies_lib.trial_counts(study), "Trials by state"))
    if best_table is not None:
        multi = len(study.directions) > 1
        blocks.append(d.Table(best_table, "Pareto front (best trade-offs)" if multi else
                              "Parameters of the best trial"))
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", info.name)
    names = studies_lib.objective_names(study)
    for i, objective in enumerate(names):
        tag = "" if len(names) == 1 else f"-{re.sub(r'[^A-Za-z0-9_.-]+', '_', objective)}"
        what = "" if len(names) == 1 else f" ({objective})"
        path = studies_lib.plot_history(study, fig_dir / f"study-{slug}{tag}-history.png",
                                        f"{info.name}: optimisation history{what}", i) if draw else None
        if path is not None:
            figures.append(path)
            blocks.append(d.Figure(path, f"Optimisation history of `{info.name}`{what}: objective per trial and "
                                         "best so far."))
        elif draw:
            blocks.append(d.Para("No optimisation history figure: no complete trial yet.", "note"))
        imp, why = studies_lib.importances(study, i)
        if imp is None:
            blocks.append(d.Para(f"No parameter importances{what}: {why}.", "note"))
            continue
        blocks.append(d.Table(imp, f"Parameter importances{what} (fANOVA, seed 0)"))
        path = studies_lib.plot_importances(study, fig_dir / f"study-{slug}{tag}-importances.png",
                                            f"{info.name}: parameter importances{what}", i) if draw else None
        if path is not None:
            figures.append(path)
            blocks.append(d.Figure(path, f"Parameter importances of `{info.name}`{what} (fANOVA, seed 0)."))
    matched = tune_runs[tune_runs["study"] == info.name] if not tune_runs.empty else tune_runs
    if not matched.empty:
        blocks.append(d.Para("MLflow tuning run(s): " + ", ".join(
            f"`{r['run_name']}` (`{r['run_id']}`, {r['status']})" for _, r in matched.iterrows()) + "."))
    return blocks, figures


STUDY_TAGS = ("study_name", "study", "optuna.study_name", "optuna_study")


def tune_runs(store: runs_lib.Store | None, experiment_ids: list[str]) -> pd.DataFrame:
    """Top-level `kind=tune` runs, with the study name from whichever study tag they carry."""
    cols = ["run_id", "run_name", "status", "start_ms", "study", "dataset"]
    if store is None or not experiment_ids:
        return pd.DataFrame(columns=cols)
    frames = []
    for eid in sorted(set(experiment_ids)):
        runs = runs_lib.search(store, eid)
        if runs.empty:
            continue
        runs = runs[(runs["kind"] == "tune") & runs["parent_run_id"].isna()]
        study = pd.Series([None] * len(runs), index=runs.index, dtype=object)
        for tag in STUDY_TAGS:
            if f"tags.{tag}" in runs:
                study = study.where(study.map(runs_lib.present), runs[f"tags.{tag}"])
        frames.append(runs.assign(study=study)[cols])
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames).sort_values(["start_ms", "run_id"], kind="mergesort").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# the whole report


def report_name(dataset: str, spec: str, selections: list[runs_lib.Selection]) -> str:
    if spec.strip() == "all":
        return f"{dataset}-pooled"
    ids = [r[:8] for s in selections for r in (s.parents["run_id"] if not s.parents.empty else [])]
    return f"{dataset}-{'-'.join(ids)}" if ids else f"{dataset}-{spec.strip()}"


def generate(args: argparse.Namespace) -> int:
    datasets = list(runs_lib.DATASETS) if args.dataset == "all" else [args.dataset]
    uri = runs_lib.resolve_uri(args.tracking_uri)
    looked: list[str] = []
    store: runs_lib.Store | None
    store_problem = f"No MLflow store at {uri}."
    try:
        store = runs_lib.open_store(uri)
    except runs_lib.StoreMissing as err:
        store = None
        looked.append(str(err))
    except Exception as err:  # noqa: BLE001 - not a database, unreachable server: say where, go on to Optuna
        store = None
        store_problem = f"Could not open the MLflow store {uri}: {type(err).__name__}: {str(err).splitlines()[0]}"
        looked.append(store_problem)
    selections = []
    for ds in datasets:
        experiment = args.experiment or f"noprop-bench-{ds}"
        if store is None:
            sel = runs_lib.Selection(ds, experiment, f"experiment '{experiment}' in {uri}")
            sel.problems.append(store_problem)
        else:
            try:
                sel = runs_lib.select_runs(store, ds, experiment, args.runs)
            except Exception as err:  # noqa: BLE001 - unreachable server, unreadable database: say where
                sel = runs_lib.Selection(ds, experiment, f"experiment '{experiment}' in {uri}")
                sel.problems.append(f"Could not read the MLflow store {uri}: {type(err).__name__}: "
                                    f"{str(err).splitlines()[0] if str(err) else ''}")
            looked.append(f"{ds}: experiment '{experiment}' in {store.where()}"
                          + (f" — {' '.join(sel.problems)}" if sel.problems else ""))
        selections.append(sel)

    storage, storage_text, storage_where = studies_lib.resolve_storage(args.optuna_storage)
    studies: list[studies_lib.StudyInfo] = []
    study_problem = None
    if storage is None:
        study_problem = f"No Optuna storage at {storage_text}."
    else:
        try:
            studies = [s for s in studies_lib.load_studies(storage) if s.dataset in (*datasets, None)]
        except Exception as err:  # noqa: BLE001 - unreadable storage: say so, report the rest
            study_problem = f"Could not read Optuna storage {storage}: {type(err).__name__}: {err}"
        if not studies and study_problem is None:
            study_problem = f"No Optuna study for {', '.join(datasets)} in {storage}."
    looked.append(f"Optuna: {storage_where}" + (f" — {study_problem}" if study_problem and storage else ""))

    if not any(s.found_anything for s in selections) and not studies:
        print(f"{build_parser().prog}: nothing to report. Looked in:\n  " + "\n  ".join(looked), file=sys.stderr)
        return 2

    name = report_name(args.dataset, args.runs, selections)
    out_dir = args.out or Path("reports") / name
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in sorted(fig_dir.glob("*.png")):  # the figures folder is ours: no stale figures from earlier reports
        old.unlink()

    title = "noprop-bench report: " + " and ".join(DATASET_TITLE[ds] for ds in datasets)
    doc = d.Document(title)
    optuna_text = f"the Optuna storage `{storage}`" if storage else "no Optuna storage (none found)"
    doc.add(d.Para(f"Read from the MLflow store `{uri}` (experiments: "
                   f"{', '.join(f'`{s.experiment}`' for s in selections)}) and {optuna_text}, with "
                   f"`python -m analysis.report --dataset {args.dataset} --runs {args.runs}`. Every number below "
                   "was measured in those runs, except the paper reference columns, which are labelled as "
                   "reported in the paper.", "source"))
    if args.no_figures:
        doc.add(d.Para("Figures were not drawn (`--no-figures`).", "note"))
    sections = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for sel in selections:
            section = Section(store, sel, fig_dir, draw=not args.no_figures)
            doc.add(*section.build())
            sections.append(section)

        exp_ids = [s.experiment_id for s in selections if s.experiment_id]
        tunes = tune_runs(store, exp_ids)
        doc.add(d.Heading("Optuna studies", 2))
        study_figures: list[tuple[str, list[Path]]] = []
        if study_problem:
            doc.add(d.Para(study_problem, "note"))
        for info in studies:
            blocks, figs = study_blocks(info, fig_dir, tunes, draw=not args.no_figures)
            doc.add(*blocks)
            study_figures.append((info.name, figs))
        if not tunes.empty:
            doc.add(d.Table(pd.DataFrame({
                "tuning run": tunes["run_name"].map(text), "run id": tunes["run_id"],
                "status": tunes["status"].map(text), "started": tunes["start_ms"].map(when),
                "study": tunes["study"].map(text)}), "MLflow tuning runs (kind=tune)"))

    written = []
    if args.format in ("md", "both"):
        (out_dir / "report.md").write_text(d.to_markdown(doc, out_dir), encoding="utf-8")
        written.append(out_dir / "report.md")
    if args.format in ("html", "both"):
        (out_dir / "report.html").write_text(d.to_html(doc), encoding="utf-8")
        written.append(out_dir / "report.html")

    if not (args.no_log_artifacts or args.no_figures) and store is not None:
        log_artifacts(store, sections, study_figures, tunes, written)
    for path in written:
        print(f"wrote {path}")
    for sec in sections:
        for gap in sec.missing:
            print(f"note ({sec.sel.dataset}): {gap}", file=sys.stderr)
    return 0


def log_artifacts(store: runs_lib.Store, sections: list[Section], study_figures: list[tuple[str, list[Path]]],
                  tunes: pd.DataFrame, written: list[Path]) -> None:
    """Figures (and the report files) onto the parent run(s) they describe; failures only warn."""
    def log(run_id: str, path: Path, artifact_path: str) -> None:
        try:
            store.client.log_artifact(run_id, str(path), artifact_path=artifact_path)
        except Exception as err:  # noqa: BLE001 - read-only store etc.: the report on disk is what matters
            print(f"warning: could not log {path.name} to run {run_id}: {type(err).__name__}: {err}", file=sys.stderr)

    for sec in sections:
        if sec.sel.parents.empty:
            continue
        where = "report" if not sec.sel.pooled else "report-pooled"
        for rid in sec.sel.parents["run_id"]:
            for path in [*sec.figures, *written]:
                log(rid, path, where)
    for study, figs in study_figures:
        matched = tunes[tunes["study"] == study] if not tunes.empty else tunes
        if matched.empty or not figs:
            continue
        rid = matched.iloc[-1]["run_id"]
        for path in [*figs, *written]:
            log(rid, path, "report")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return generate(args)


if __name__ == "__main__":
    sys.exit(main())
