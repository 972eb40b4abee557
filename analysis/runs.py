"""Loading `runners.compare` runs from MLflow into pandas, in a stable order.

The schema is the one in docs/TRACKING.md: one parent run per compare invocation (tag `kind=compare`),
one child run per method and seed (tag `kind=method`, `mlflow.parentRunId` = the parent).

    store = open_store("sqlite:///mlruns/mlflow.db")      # StoreMissing if the database file is absent
    sel = select_runs(store, "mnist", "noprop-bench-mnist", "latest")
    sel.table_runs      # FINISHED child runs: one row per method and seed, metric columns as logged
    sel.children        # every child run of the selected parents, failed ones included
    history(store, sel.table_runs, ["val_acc", "train_time_cum_s"])   # per-epoch values, long format

Nothing here creates a database, an experiment or a run: reading a report never changes the store.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# mlflow itself is imported where it is used: `--help` and the constants stay quick to import.

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"  # same as bench.tracking.DEFAULT_URI (not imported: it pulls in torch)
DATASETS = ("mnist", "cifar10")
# Display order of methods, as in bench.config.METHODS (tests check the two agree); unknown methods follow, sorted.
METHOD_ORDER = ("noprop_dt", "noprop_dt_decoder", "backprop_cnn", "backprop_blocks")
# Methods with a chain of denoising blocks: only they log test_acc_deterministic and the after-k diagnostics.
CHAIN_METHODS = ("noprop_dt", "noprop_dt_decoder", "backprop_blocks")
ENDED = ("FINISHED", "FAILED", "KILLED")
PARENT_TAG = "mlflow.parentRunId"


class StoreMissing(Exception):
    """There is no tracking store where we looked (the message says where)."""


def resolve_uri(cli_value: str | None) -> str:
    """--tracking-uri > $MLFLOW_TRACKING_URI > sqlite:///mlruns/mlflow.db, like bench.tracking.resolve_uri."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (None for other kinds of store)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def method_order(methods) -> list[str]:
    """Known methods in the canonical order, then any others sorted by name."""
    present = {str(m) for m in methods if isinstance(m, str) and m}
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


@dataclass
class Store:
    uri: str
    client: Any  # mlflow.MlflowClient

    def where(self) -> str:
        path = sqlite_path(self.uri)
        return f"{self.uri} (file {path.resolve()})" if path is not None else self.uri


def open_store(uri: str) -> Store:
    """Point MLflow at an existing store; a missing SQLite file is reported, not created."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise StoreMissing(f"no MLflow store at {uri} (no file {path.resolve()})")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    return Store(uri, MlflowClient(tracking_uri=uri))


# ----------------------------------------------------------------------------------------------------------------
# search_runs output → tidy frames


def _col(raw: pd.DataFrame, name: str) -> pd.Series:
    if name in raw:
        return raw[name]
    return pd.Series([None] * len(raw), index=raw.index, dtype=object)


def present(value: Any) -> bool:
    """True for a real value; False for None/NaN/NA (pandas 3 string columns hold NaN, not None)."""
    if value is None:
        return False
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):
        return True


def _text(value: Any) -> str | None:
    return str(value) if present(value) else None


def _ms(value: Any) -> int | None:
    """search_runs gives datetimes; keep integer milliseconds (sortable, exact, time-zone free)."""
    if not present(value):
        return None
    if isinstance(value, pd.Timestamp):
        return int(value.value // 1_000_000)
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1000))
    return int(value)


def tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per run: ids, status, times (ms), the tags the report uses, and metrics without their prefix.

    Params and all other tags stay available as `params.*` / `tags.*` columns (prefixed, so a param
    never shadows a metric of the same name).
    """
    if raw is None or raw.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "status", "start_ms", "end_ms", "parent_run_id",
                                     "kind", "method", "seed", "dataset", "error", "peak_mem_kind"])
    out = pd.DataFrame({
        "run_id": raw["run_id"].astype(str),
        "run_name": _col(raw, "tags.mlflow.runName").map(_text),
        "status": _col(raw, "status").map(_text),
        "start_ms": _col(raw, "start_time").map(_ms),
        "end_ms": _col(raw, "end_time").map(_ms),
        "parent_run_id": _col(raw, f"tags.{PARENT_TAG}").map(_text),
        "kind": _col(raw, "tags.kind").map(_text),
        "method": _col(raw, "tags.method").map(_text),
        "dataset": _col(raw, "tags.dataset").map(_text),
        "error": _col(raw, "tags.error").map(_text),
        "peak_mem_kind": _col(raw, "tags.peak_mem_kind").map(_text),
    }, index=raw.index)
    seeds = _col(raw, "tags.seed").map(_text).fillna(_col(raw, "params.run_seed").map(_text))
    out["seed"] = pd.to_numeric(seeds, errors="coerce").astype("Int64")
    # Older runs may lack the method tag: the run name is `<method>-seed<seed>`.
    names = out["run_name"].fillna("")
    guessed = names.str.extract(r"^(.+)-seed(\d+)$")
    out["method"] = out["method"].fillna(guessed[0].where(guessed[0].notna(), None))
    out["seed"] = out["seed"].fillna(pd.to_numeric(guessed[1], errors="coerce").astype("Int64"))
    metric_cols = {c: c[len("metrics."):] for c in raw.columns if c.startswith("metrics.")}
    metrics = raw[list(metric_cols)].rename(columns=metric_cols).astype(float)
    extra = raw[[c for c in raw.columns if c.startswith(("params.", "tags."))]]
    out = pd.concat([out, metrics, extra], axis=1)
    return out.reset_index(drop=True)


def sort_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Stable order: method (canonical), seed, start time, run id."""
    if runs.empty:
        return runs.reset_index(drop=True)
    rank = {m: i for i, m in enumerate(method_order(runs["method"].dropna().unique()))}
    key = runs.assign(_m=runs["method"].map(lambda m: rank.get(m, len(rank))),
                      _s=runs["seed"].astype("Float64").fillna(-1), _t=runs["start_ms"].fillna(0))
    return (key.sort_values(["_m", "_s", "_t", "run_id"], kind="mergesort")
            .drop(columns=["_m", "_s", "_t"]).reset_index(drop=True))


def search(store: Store, experiment_id: str, filter_string: str = "") -> pd.DataFrame:
    """`mlflow.search_runs` into a tidy frame (active runs only; deleted ones are not reported)."""
    import mlflow

    raw = mlflow.search_runs(experiment_ids=[experiment_id], filter_string=filter_string,
                             order_by=["attributes.start_time ASC"], output_format="pandas")
    return tidy(raw)


# ----------------------------------------------------------------------------------------------------------------
# Which runs a report describes


@dataclass
class Selection:
    """The runs one dataset section of the report describes, and what was noticed while choosing them."""

    dataset: str
    experiment: str
    looked: str                       # where we looked, for messages
    experiment_id: str | None = None
    mode: str = "latest"              # latest | all | ids
    parents: pd.DataFrame = field(default_factory=pd.DataFrame)     # the selected compare parent runs
    children: pd.DataFrame = field(default_factory=pd.DataFrame)    # all their child runs, any status
    table_runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # FINISHED children in the table
    left_out: list[str] = field(default_factory=list)              # runs seen but not used, and why
    problems: list[str] = field(default_factory=list)              # what is missing

    @property
    def pooled(self) -> bool:
        return len(self.parents) > 1 or self.mode == "all"

    @property
    def found_anything(self) -> bool:
        return not self.parents.empty


def experiment_id(store: Store, name: str) -> str | None:
    exp = store.client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        return None
    return exp.experiment_id


def compare_parents(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Top-level compare runs of `dataset`; older runs without tags are recognised by their name."""
    if runs.empty:
        return runs
    top = runs["parent_run_id"].isna()
    names = runs["run_name"].fillna("")
    is_compare = (runs["kind"] == "compare") | (runs["kind"].isna() & names.str.startswith("compare-"))
    ds = runs["dataset"].fillna(names.str.extract(r"^compare-([a-z0-9]+)")[0])
    return runs[top & is_compare & (ds == dataset)].sort_values(["start_ms", "run_id"], kind="mergesort")


def select_runs(store: Store, dataset: str, experiment: str, spec: str) -> Selection:
    """Resolve `--runs` (latest | all | ID[,ID...]) for one dataset; never raises for missing data."""
    sel = Selection(dataset, experiment, f"experiment '{experiment}' in {store.uri}")
    sel.experiment_id = experiment_id(store, experiment)
    if sel.experiment_id is None:
        sel.problems.append(f"No experiment named '{experiment}' in {store.uri}.")
        return sel
    runs = search(store, sel.experiment_id)
    if runs.empty:
        sel.problems.append(f"The experiment '{experiment}' has no runs.")
        return sel
    parents = compare_parents(runs, dataset)
    spec = spec.strip()
    if spec == "latest":
        sel.mode = "latest"
        if parents.empty:
            sel.problems.append(f"No compare run (tag kind=compare) for {dataset} in experiment '{experiment}'.")
            return sel
        chosen = parents.tail(1)
    elif spec == "all":
        sel.mode = "all"
        chosen = _pool_all(parents, sel)
        if chosen.empty:
            if parents.empty:
                sel.problems.append(f"No compare run (tag kind=compare) for {dataset} in experiment '{experiment}'.")
            return sel
    else:
        sel.mode = "ids"
        wanted = [s.strip() for s in spec.split(",") if s.strip()]
        rows = []
        for rid in wanted:
            match = runs[runs["run_id"] == rid]
            if match.empty:
                sel.problems.append(f"Run {rid} is not in experiment '{experiment}'.")
                continue
            row = match.iloc[0]
            if present(row["parent_run_id"]):  # a child run id: report its parent
                sel.left_out.append(f"Run {rid} is a child run; its parent {row['parent_run_id']} is reported.")
                match = runs[runs["run_id"] == row["parent_run_id"]]
                if match.empty:
                    continue
                row = match.iloc[0]
            if row["run_id"] not in set(parents["run_id"]):
                sel.problems.append(f"Run {row['run_id']} is not a {dataset} compare run "
                                    f"(kind={row['kind']}, dataset={row['dataset']}).")
                continue
            rows.append(match.iloc[[0]])
        chosen = pd.concat(rows).drop_duplicates("run_id") if rows else parents.iloc[0:0]
        chosen = chosen.sort_values(["start_ms", "run_id"], kind="mergesort")
        if chosen.empty:
            return sel
    sel.parents = chosen.reset_index(drop=True)
    parent_ids = list(sel.parents["run_id"])
    children = runs[runs["parent_run_id"].isin(parent_ids)]
    sel.children = sort_runs(children)
    _choose_table_runs(sel)
    return sel


def _pool_all(parents: pd.DataFrame, sel: Selection) -> pd.DataFrame:
    """`--runs all`: every ended compare run; full-data runs only, unless there are none (then quick ones)."""
    running = parents[~parents["status"].isin(ENDED)]
    for _, p in running.iterrows():
        sel.left_out.append(f"Compare run {p['run_id']} ({p['run_name']}) is {p['status']}: still in progress, "
                            "not pooled.")
    ended = parents[parents["status"].isin(ENDED)]
    quick = ended.get("tags.quick", pd.Series(index=ended.index, dtype=object)).fillna("False") == "True"
    if (~quick).any():
        for _, p in ended[quick].iterrows():
            sel.left_out.append(f"Compare run {p['run_id']} ({p['run_name']}) is a --quick run (subset of the data): "
                                "not pooled with the full-data runs.")
        return ended[~quick]
    return ended


def _choose_table_runs(sel: Selection) -> None:
    """FINISHED children go into the table; with several parents, the latest run of each method and seed."""
    ch = sel.children
    if ch.empty:
        return
    for _, r in ch[ch["status"] != "FINISHED"].iterrows():
        why = f": {r['error']}" if present(r["error"]) else ""
        sel.left_out.append(f"{r['method']} seed {r['seed']} (run {r['run_id']}) is {r['status']}{why}; "
                            "not in the table.")
    done = ch[ch["status"] == "FINISHED"]
    if done["method"].isna().any() or done["seed"].isna().any():
        for _, r in done[done["method"].isna() | done["seed"].isna()].iterrows():
            sel.left_out.append(f"Run {r['run_id']} ({r['run_name']}) has no method/seed tag; not in the table.")
        done = done[done["method"].notna() & done["seed"].notna()]
    latest = done.sort_values(["start_ms", "run_id"], kind="mergesort").groupby(["method", "seed"]).tail(1)
    for _, r in done[~done["run_id"].isin(latest["run_id"])].iterrows():
        sel.left_out.append(f"{r['method']} seed {r['seed']} (run {r['run_id']}) was run again later; "
                            "the later run counts.")
    sel.table_runs = sort_runs(latest)


# ----------------------------------------------------------------------------------------------------------------
# Per-epoch histories


def history(store: Store, runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Long format: run_id, method, seed, key, step, value — via MlflowClient.get_metric_history.

    When a step was logged twice (it should not be), the later value counts.
    """
    rows = []
    for _, r in runs.iterrows():
        for key in keys:
            for m in store.client.get_metric_history(r["run_id"], key):
                rows.append((r["run_id"], r["method"], int(r["seed"]), key, int(m.step), int(m.timestamp),
                             float(m.value)))
    frame = pd.DataFrame(rows, columns=["run_id", "method", "seed", "key", "step", "timestamp", "value"])
    frame = frame.sort_values(["run_id", "key", "step", "timestamp"], kind="mergesort")
    frame = frame.groupby(["run_id", "key", "step"], sort=False).tail(1)
    return sort_runs(frame.assign(start_ms=0)).drop(columns=["start_ms", "timestamp"]).sort_values(
        ["key"], kind="mergesort").reset_index(drop=True)


def wide_history(hist: pd.DataFrame) -> pd.DataFrame:
    """One row per run and epoch, one column per metric key."""
    if hist.empty:
        return pd.DataFrame(columns=["run_id", "method", "seed", "step"])
    wide = hist.pivot_table(index=["run_id", "method", "seed", "step"], columns="key", values="value",
                            aggfunc="last").reset_index()
    wide.columns.name = None
    return sort_runs(wide.assign(start_ms=0)).drop(columns="start_ms").sort_values(
        ["step"], kind="mergesort").reset_index(drop=True)


def load_text_artifact(store: Store, run_id: str, path: str) -> str | None:
    """A small text artifact of a run (e.g. config.yaml), or None when it is not there."""
    import mlflow.artifacts

    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except Exception:  # noqa: BLE001 - missing artifact or unreachable artifact store: the report says so
        return None
