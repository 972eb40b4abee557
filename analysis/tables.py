"""Comparison tables: one row per method, mean ± standard error over seeds.

The input is a per-run DataFrame (one row per method and seed, metric columns named as logged),
so the same code serves `runners.compare` (fresh results) and `analysis.report` (MLflow runs).
"""
from __future__ import annotations

import math

import pandas as pd

# (metric column, table heading, scale for display, decimals)
COLUMNS: list[tuple[str, str, float, int]] = [
    ("test_acc", "test acc (%)", 100.0, 2),
    ("test_acc_deterministic", "test acc, no noise (%)", 100.0, 2),
    ("best_val_acc", "best val acc (%)", 100.0, 2),
    ("epochs_completed", "epochs", 1.0, 0),
    ("train_time_s", "train time (s)", 1.0, 1),
    ("eval_time_s", "test eval time (s)", 1.0, 2),
    ("images_per_s", "train images/s", 1.0, 0),
    ("peak_mem_train_mb", "peak mem train (MB)", 1.0, 0),
    ("train_counted_peak_mb", "counted train peak (MB)", 1.0, 1),
    ("params_total", "parameters", 1.0, 0),
]


def mean_se(values: pd.Series) -> tuple[float, float]:
    """Mean and standard error (sample std / √n); the error is NaN for a single value."""
    v = values.dropna().astype(float)
    if v.empty:
        return math.nan, math.nan
    se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return float(v.mean()), float(se)


def aggregate(runs: pd.DataFrame, method_order: list[str] | None = None) -> pd.DataFrame:
    """Numeric table: per method, `<metric>` (mean) and `<metric>_se`, the seed count and memory kind."""
    rows = []
    methods = method_order or sorted(runs["method"].unique())
    for method in methods:
        group = runs[runs["method"] == method]
        if group.empty:
            continue
        row: dict[str, object] = {"method": method, "seeds": int(group["seed"].nunique())}
        if "peak_mem_kind" in group:
            row["peak_mem_kind"] = ",".join(sorted(set(group["peak_mem_kind"].dropna().astype(str))))
        for metric, *_ in COLUMNS:
            if metric in group:
                row[metric], row[f"{metric}_se"] = mean_se(group[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(mean: float, se: float, scale: float, decimals: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{mean * scale:,.{decimals}f}"
    if se is not None and not math.isnan(se):
        text += f" ± {se * scale:,.{decimals}f}"
    return text


def display(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable version of `aggregate`'s table (percentages, units, ± s.e.)."""
    out = pd.DataFrame({"method": table["method"], "seeds": table["seeds"]})
    for metric, heading, scale, decimals in COLUMNS:
        if metric in table:
            pairs = zip(table[metric], table[f"{metric}_se"], strict=True)
            out[heading] = [_fmt(m, s, scale, decimals) for m, s in pairs]
    if "peak_mem_kind" in table:
        out["memory kind"] = table["peak_mem_kind"]
    return out


def to_markdown(table: pd.DataFrame) -> str:
    return display(table).to_markdown(index=False)
