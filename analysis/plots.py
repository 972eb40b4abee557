"""The report's figures (seaborn on matplotlib's Agg backend), saved as byte-stable PNGs.

Every function takes tidy pandas frames (see analysis.runs), writes one PNG and returns its path, or
None when there is nothing to draw. Colours are fixed per method, so a method has the same colour in
every figure; the PNGs carry no software/date metadata, so the same runs give the same bytes.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.runs import METHOD_ORDER  # noqa: E402

RC = {"svg.hashsalt": "noprop-bench", "figure.dpi": 100, "savefig.dpi": 100, "font.size": 10,
      "axes.titlesize": 11, "path.simplify": True}
FIGSIZE = (7.5, 4.2)


def palette(methods: list[str]) -> dict[str, tuple[float, float, float]]:
    """Known methods keep their colour whatever else is plotted; unknown ones take the next colours."""
    colours = sns.color_palette("colorblind", 10)
    known = {m: colours[i] for i, m in enumerate(METHOD_ORDER)}
    extra = [m for m in methods if m not in known]
    known.update({m: colours[(len(METHOD_ORDER) + i) % len(colours)] for i, m in enumerate(extra)})
    return {m: known[m] for m in methods}


def save(fig: plt.Figure, path: Path) -> Path:
    """PNG without the Software tag (matplotlib writes no date into PNGs): identical input, identical bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return path


def _figure(ncols: int = 1, width: float | None = None):
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, ncols, figsize=(width or FIGSIZE[0], FIGSIZE[1]), squeeze=False)
    return fig, list(axes[0])


def _style(ax: plt.Axes) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _legend(ax: plt.Axes, title: str | None = "method") -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, title=title, fontsize=8, title_fontsize=8, frameon=False,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def accuracy_vs_epoch(curves: pd.DataFrame, methods: list[str], path: Path, *, title: str) -> Path | None:
    """Validation accuracy per epoch; the mean over seeds with a ± standard-error band."""
    data = curves.dropna(subset=["val_acc"]) if "val_acc" in curves else curves.iloc[0:0]
    if data.empty:
        return None
    return mean_lines(data.assign(acc=data["val_acc"] * 100.0), methods, path, x="step", y="acc",
                      xlabel="epoch", ylabel="validation accuracy (%)", title=title)


def accuracy_vs_time(curves: pd.DataFrame, methods: list[str], path: Path, *, title: str) -> Path | None:
    """Validation accuracy against cumulative training wall-clock; one line per run (seeds differ in time)."""
    needed = {"val_acc", "train_time_cum_s"}
    if not needed <= set(curves.columns):
        return None
    data = curves.dropna(subset=list(needed))
    if data.empty:
        return None
    data = data.assign(acc=data["val_acc"] * 100.0, unit=data["run_id"])
    order = [m for m in methods if m in set(data["method"])]
    with plt.rc_context(RC):
        fig, (ax,) = _figure()
        sns.lineplot(data=data, x="train_time_cum_s", y="acc", hue="method", hue_order=order,
                     palette=palette(order), units="unit", estimator=None, marker="o", sort=True, ax=ax)
        ax.set_xlabel("cumulative training time (s, validation excluded)")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(title)
        _style(ax)
        _legend(ax)
        return save(fig, path)


def _label_bars(ax: plt.Axes, data: pd.DataFrame, y: str, order: list[str], hue: str | None,
                hue_order: list[str] | None, decimals: int) -> None:
    """Write each bar's mean just above its ± s.e. whisker (bar_label alone would sit on the whisker)."""
    levels = hue_order if hue else [None] * len(ax.containers)
    top = 0.0
    for container, level in zip(ax.containers, levels, strict=False):
        for bar in container:
            slot = round(bar.get_x() + bar.get_width() / 2)  # categorical axis: category i sits at x = i
            if not 0 <= slot < len(order):
                continue
            x = order[slot]
            group = data[data["method"] == x] if level is None else data[(data["method"] == x) & (data[hue] == level)]
            values = group[y].dropna().astype(float)
            if values.empty:
                continue
            mean = float(values.mean())
            se = float(values.std(ddof=1) / len(values) ** 0.5) if len(values) > 1 else 0.0
            top = max(top, mean + se)
            ax.annotate(f"{mean:.{decimals}f}", (bar.get_x() + bar.get_width() / 2, mean + se), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
    if top > 0:
        ax.set_ylim(0, top * 1.1)


def _bars(ax: plt.Axes, data: pd.DataFrame, y: str, order: list[str], decimals: int) -> None:
    sns.barplot(data=data, x="method", y=y, hue="method", order=order, hue_order=order, palette=palette(order),
                errorbar="se", capsize=0.15, err_kws={"linewidth": 1.2}, legend=False, ax=ax)
    _label_bars(ax, data, y, order, None, None, decimals)
    ax.set_xlabel("")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", rotation_mode="anchor")
    _style(ax)


def cost_bars(runs: pd.DataFrame, methods: list[str], path: Path, *, title: str) -> Path | None:
    """Training time and peak training memory per method (mean over seeds, ± s.e. whiskers)."""
    panels = [c for c in ("train_time_s", "peak_mem_train_mb") if c in runs and runs[c].notna().any()]
    if not panels:
        return None
    order = [m for m in methods if m in set(runs["method"])]
    with plt.rc_context(RC):
        fig, axes = _figure(len(panels), width=5.2 * len(panels))
        for ax, col in zip(axes, panels, strict=False):
            data = runs.dropna(subset=[col])
            _bars(ax, data, col, [m for m in order if m in set(data["method"])], 1 if col == "train_time_s" else 0)
            if col == "train_time_s":
                ax.set_ylabel("training time (s)")
                ax.set_title("training time per method")
            else:
                kinds = sorted(set(data.get("peak_mem_kind", pd.Series(dtype=object)).dropna().astype(str)))
                ax.set_ylabel(f"peak memory, training (MB, {' / '.join(kinds) or 'kind not logged'})")
                ax.set_title("peak training memory per method")
        fig.suptitle(title)
        return save(fig, path)


def mean_lines(long: pd.DataFrame, methods: list[str], path: Path, *, x: str, y: str, xlabel: str,
               ylabel: str, title: str, logy: bool = False) -> Path | None:
    """One line per method over an integer axis (epoch, block k or t), mean over seeds with ± s.e. band."""
    if long.empty:
        return None
    order = [m for m in methods if m in set(long["method"])]
    with plt.rc_context(RC):
        fig, (ax,) = _figure()
        sns.lineplot(data=long, x=x, y=y, hue="method", hue_order=order, palette=palette(order),
                     errorbar="se", marker="o", ax=ax)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _style(ax)
        _legend(ax)
        return save(fig, path)


def noise_bars(long: pd.DataFrame, methods: list[str], path: Path, *, title: str) -> Path | None:
    """Test accuracy with inference noise (the paper's sampling) against the deterministic chain."""
    if long.empty:
        return None
    order = [m for m in methods if m in set(long["method"])]
    variants = [v for v in ("with noise", "without noise") if v in set(long["inference"])]
    with plt.rc_context(RC):
        fig, (ax,) = _figure()
        sns.barplot(data=long, x="method", y="acc", hue="inference", order=order, hue_order=variants,
                    palette=["#4c72b0", "#dd8452"][: len(variants)], errorbar="se", capsize=0.1, ax=ax)
        _label_bars(ax, long, "acc", order, "inference", variants, 2)
        ax.set_xlabel("")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right", rotation_mode="anchor")
        _style(ax)
        _legend(ax, title="inference")
        return save(fig, path)


def optuna_axes(draw, path: Path, *, title: str) -> Path | None:
    """Save a figure drawn by optuna.visualization.matplotlib (`draw()` returns its Axes)."""
    with plt.rc_context(RC):
        ax = draw()
        fig = ax.figure
        fig.set_size_inches(*FIGSIZE)
        for loc in ("left", "right"):  # optuna may title on the left; one title, ours
            ax.set_title("", loc=loc)
        ax.set_title(title)
        return save(fig, path)
