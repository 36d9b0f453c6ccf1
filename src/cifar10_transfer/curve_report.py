"""The learning curves' report: summary, seed spread, findings, wall-clock and figures, from learning_curves.json."""

from __future__ import annotations

import textwrap

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from .plots import PALETTE, canvas, styled
from .study import label


def run_times(curves: dict) -> str:
    """The wall-clock of the first finished run of these curves and, after reruns, of the latest one."""
    runs = curves.get("runs") or [curves]  # files written before runs were recorded hold one run

    def describe(run: dict) -> str:
        return (f"{run['seconds'] / 60:.1f} min, {run['backbone_images_computed']:,} images through the backbone"
                + (f", {run['stages_trained']} stages trained" if "stages_trained" in run else ""))

    text = f"first run {describe(runs[0])}"
    return text + (f"; rerun with the features and stages kept {describe(runs[-1])}" if len(runs) > 1 else "")


def curve_summary(curves: dict) -> pd.DataFrame:
    """Mean and standard deviation of test accuracy (fractions) per model and size, with the seed count."""
    frame = pd.DataFrame(curves["points"])
    summary = frame.groupby(["model", "train_size"])["test_accuracy"].agg(["mean", "std", "count"])
    return summary.fillna({"std": 0.0}).reset_index()


def curve_findings(curves: dict) -> list[str]:
    """Sentences computed from the curves: the data transfer saves, the seed spread, the resolution trade."""
    summary = curve_summary(curves)
    head, largest = f"{curves['backbone']}_head", summary["train_size"].max()
    cnn_best = summary[(summary.model == "cnn") & (summary.train_size == largest)]["mean"].iloc[0]
    heads = summary[summary.model == head].sort_values("train_size")
    matching = heads[heads["mean"] >= cnn_best]
    out = []
    if len(matching):
        first = matching.iloc[0]
        out.append(f"The {label(head)} with {first.train_size:,} labelled images ({100 * first['mean']:.1f}%) "
                   f"matches the CNN with all {largest:,} ({100 * cnn_best:.1f}%).")
    else:
        out.append(f"No size of the {label(head)} reaches the CNN's {100 * cnn_best:.1f}% at {largest:,} images.")
    seeds = int(summary["count"].max())
    for model in ("cnn", head):
        rows = summary[summary.model == model]
        out.append(f"{label(model)}: {seeds} seeds spread by at most ±{100 * rows['std'].max():.1f} points "
                   f"(standard deviation), ±{100 * rows['std'].mean():.1f} on average over the sizes.")
    for size in sorted({summary.train_size.min(), largest}):
        both = summary[summary.train_size == size].set_index("model")["mean"]
        out.append(f"At {size:,} images transfer adds {100 * (both[head] - both['cnn']):+.1f} points "
                   f"({100 * both[head]:.1f}% vs {100 * both['cnn']:.1f}%).")
    resolution = pd.DataFrame(curves["resolution"])
    if len(resolution) > 1:
        best, cheapest = resolution.loc[resolution.test_accuracy.idxmax()], resolution.iloc[0]
        out.append(f"Input size: {best.image_size:.0f}px gives the best head ({100 * best.test_accuracy:.1f}%); "
                   f"{cheapest.image_size:.0f}px reaches {100 * cheapest.test_accuracy:.1f}% with features "
                   f"{best.feature_seconds / cheapest.feature_seconds:.1f}x faster on this machine.")
    return out


def seed_spread(curves: dict, train_size: int) -> dict[str, tuple[float, float, int]]:
    """(mean, std, seeds) of each curve model at `train_size`, for the main table."""
    summary = curve_summary(curves)
    rows = summary[summary.train_size == train_size]
    return {r.model: (float(r["mean"]), float(r["std"]), int(r["count"])) for _, r in rows.iterrows()}


@styled
def learning_curve_figure(curves: dict) -> Figure:
    """Test accuracy against training-set size (log scale), mean ± standard deviation over seeds."""
    summary = curve_summary(curves)
    fig, ax = canvas((9, 5))
    for model, color in (("cnn", PALETTE["secondary"]), (f"{curves['backbone']}_head", PALETTE["primary"])):
        rows = summary[summary.model == model]
        ax.errorbar(rows.train_size, rows["mean"], yerr=rows["std"], marker="o", capsize=4, color=color,
                    label=f"{label(model)} ({int(rows['count'].max())} seeds)")
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(summary.train_size)), [f"{n:,}" for n in sorted(set(summary.train_size))])
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(xlabel="labelled training images (80% train, 20% validation)", ylabel="test accuracy")
    ax.legend(loc="best")
    fig.suptitle("How much labelled data does transfer learning save?")
    ax.set_title(textwrap.shorten(f"Data: {curves['provenance']['data']}; weights: {curves['provenance']['weights']}",
                                  120), fontsize=9)
    return fig


@styled
def resolution_cost_figure(curves: dict) -> Figure:
    """Head-only test accuracy against the seconds of feature extraction, one point per input size."""
    points = pd.DataFrame(curves["resolution"])
    fig, ax = canvas((9, 5))
    ax.plot(points.feature_seconds, points.test_accuracy, marker="o", color=PALETTE["primary"])
    for _, p in points.iterrows():
        ax.annotate(f"{p.image_size:.0f}px", (p.feature_seconds, p.test_accuracy), textcoords="offset points",
                    xytext=(6, -12))
    ax.set_xlim(0, points.feature_seconds.max() * 1.1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(xlabel=f"seconds to compute features of {int(points.images.iloc[0]):,} images on this machine "
                  f"({curves['provenance']['device']})", ylabel="head-only test accuracy")
    fig.suptitle(f"Input resolution vs cost: {label(curves['backbone'] + '_head')}")
    prov = curves["provenance"]
    ax.set_title(textwrap.shorten(f"Data: {prov['data']}; weights: {prov['weights']}; {prov['hardware']}", 140),
                 fontsize=9)
    return fig
