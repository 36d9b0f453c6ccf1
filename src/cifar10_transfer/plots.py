"""The figures' style and the figures of data and results: pure functions, each returning a matplotlib Figure."""

from __future__ import annotations

import functools
import math
import os
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display

import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, PercentFormatter  # noqa: E402

from .publish import atomic_write  # noqa: E402
from .results import single_view_key, single_view_test_accuracy, training_seconds  # noqa: E402
from .study import stage, table_stages  # noqa: E402

DPI = 150
# One palette for every figure (Okabe-Ito: distinguishable with colour-vision deficiency).
PALETTE = {"primary": "#0072B2", "secondary": "#E69F00", "tertiary": "#009E73",
           "muted": "#999999", "red": "#D55E00", "green": "#009E73", "blue": "#0072B2"}
CHANNEL_COLORS = (PALETTE["red"], PALETTE["green"], PALETTE["blue"])
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "figure.titlesize": 13, "figure.titleweight": "bold",
    "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9, "legend.frameon": False,
    "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True, "axes.spines.top": False, "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=[PALETTE["primary"], PALETTE["secondary"],
                                                PALETTE["tertiary"], PALETTE["muted"]]),
    "image.cmap": "Blues", "savefig.dpi": DPI,
}


def format_accuracy(fraction: float) -> str:
    """An accuracy fraction as the project prints it everywhere: 0.6123 -> '61.2%'."""
    return f"{100 * fraction:.1f}%"


def styled(func):
    """Draw inside the project style, so fonts and colours never depend on the caller's rcParams."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with rc_context(STYLE):
            return func(*args, **kwargs)
    return wrapper


def canvas(figsize: tuple[float, float], *grid, **kwargs) -> tuple:
    """A constrained-layout Figure of `figsize` inches and its axes (`Figure.subplots(*grid, **kwargs)`)."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*grid, **kwargs)


def _image_axes(ax) -> None:
    # Images keep their frame area for a row label, but ticks and grid are noise.
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _legend_outside(ax) -> None:
    # Outside the axes the legend can never hide a bar, whatever the data.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG at `path` atomically (temp file + rename) and close it; returns the path."""
    try:
        # No "Software" metadata: the same figure gives the same bytes whatever the matplotlib version.
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}))
    finally:
        plt.close(fig)  # no-op for unmanaged figures, frees pyplot-created ones


@styled
def label_distribution(labels: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Bar chart of the number of images per class."""
    counts = np.bincount(np.asarray(labels), minlength=len(class_names))[: len(class_names)]
    fig, ax = canvas((6.5, 4.5))
    bars = ax.bar(class_names, counts, color=PALETTE["primary"])
    ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=2, fontsize=9)
    ax.set(ylabel="images", xlabel="class", title=f"Training labels per class ({counts.sum():,} images)")
    ax.tick_params(axis="x", rotation=30)
    ax.margins(y=0.12)  # room for the count labels above the tallest bar
    return fig


@styled
def sample_grid(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                per_class: int = 8, seed: int = 0) -> Figure:
    """One row per class with its name and `per_class` randomly chosen (seeded) images."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    rows = len(class_names)
    fig, axes = canvas((0.5 * per_class + 1.2, 0.49 * rows + 0.6), rows, per_class, squeeze=False)
    for row, name in enumerate(class_names):
        indices = np.flatnonzero(labels == row)
        chosen = rng.choice(indices, size=min(per_class, len(indices)), replace=False)
        for col, ax in enumerate(axes[row]):
            _image_axes(ax)
            if col < len(chosen):
                ax.imshow(images[chosen[col]], interpolation="nearest")
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle(f"Random training images, {per_class} per class")
    return fig


@styled
def average_rgb_by_class(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Grouped bars of the mean red, green and blue value of each class."""
    labels = np.asarray(labels)
    means = np.array([images[labels == c].reshape(-1, 3).mean(axis=0) if np.any(labels == c)
                      else np.zeros(3) for c in range(len(class_names))])
    fig, ax = canvas((5.5, 4.3))
    x = np.arange(len(class_names))
    width = 0.27
    for channel, (name, color) in enumerate(zip(("R", "G", "B"), CHANNEL_COLORS)):
        ax.bar(x + (channel - 1) * width, means[:, channel], width, label=name, color=color)
    ax.set_xticks(x, class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set(ylim=(0, 255), ylabel="mean pixel value (0-255)", xlabel="class", title="Average colour per class")
    _legend_outside(ax)
    return fig


@styled
def pixel_intensity(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Per-class histograms of pixel values, one R/G/B line each, as small multiples."""
    labels = np.asarray(labels)
    ncols = 5
    nrows = math.ceil(len(class_names) / ncols)
    fig, axes = canvas((6.9, 2.3 * nrows + 0.7), nrows, ncols, squeeze=False, sharex=True, sharey=True)
    values = np.arange(256)
    for index, ax in enumerate(axes.flat):
        if index >= len(class_names):
            ax.set_visible(False)
            continue
        pixels = images[labels == index].reshape(-1, 3)
        for channel, (name, color) in enumerate(zip("RGB", CHANNEL_COLORS)):
            counts = np.bincount(pixels[:, channel], minlength=256)
            # Densities rather than counts, so classes of different sizes compare directly.
            density = counts / max(counts.sum(), 1)
            ax.plot(values, density, color=color, linewidth=1.0, label=name)
        ax.set_title(class_names[index])
        ax.set_xlim(0, 255)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    for ax in axes[-1]:
        ax.set_xlabel("pixel value")
    for ax in axes[:, 0]:
        ax.set_ylabel("share of pixels")
    axes[0, 0].legend(loc="upper right")
    fig.suptitle("Pixel intensity distribution per class")
    return fig


@styled
def augmentation_grid(originals: np.ndarray, variants: np.ndarray) -> Figure:
    """Originals in the first column, their augmented variants in the next columns."""
    variants = np.asarray(variants)
    if variants.ndim != 5 or variants.shape[0] != len(originals):
        raise ValueError(f"variants must be (n, k, H, W, 3) with n={len(originals)}; got {variants.shape}")
    n, k = variants.shape[:2]
    fig, axes = canvas((0.92 * (k + 1) + 0.4, 0.8 * n + 0.7), n, k + 1, squeeze=False)
    for row in range(n):
        for col, ax in enumerate(axes[row]):
            _image_axes(ax)
            ax.imshow(originals[row] if col == 0 else variants[row, col - 1], interpolation="nearest")
    for col, ax in enumerate(axes[0]):
        ax.set_title("original" if col == 0 else f"augmented {col}", fontsize=9)
    fig.suptitle("Training-time augmentation")
    return fig


@styled
def training_curves(history: dict, title: str) -> Figure:
    """Loss and accuracy per epoch (1-based), training and validation, in two panels."""
    fig, (ax_loss, ax_acc) = canvas((6.1, 2.85), 1, 2)
    for ax, metric, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        for key, name, color in ((metric, "train", PALETTE["primary"]),
                                 (f"val_{metric}", "validation", PALETTE["secondary"])):
            values = history.get(key) or []
            if not values:
                continue
            epochs = np.arange(1, len(values) + 1)
            # Markers keep a one-epoch run visible (a line needs two points).
            ax.plot(epochs, values, marker="o", markersize=4, color=color, label=name)
        ax.set(xlabel="epoch", ylabel=label)
        # Half an epoch of padding and integer ticks: one epoch shows as "1", not 0.95 ... 1.05.
        longest = max(len(history.get(metric) or []), len(history.get(f"val_{metric}") or []), 1)
        ax.set_xlim(0.5, longest + 0.5)
        if longest <= 15:
            ax.set_xticks(np.arange(1, longest + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label.capitalize())
        if ax.lines:
            ax.legend()
    # One accuracy scale for every stage, so that curves shown side by side compare at a glance.
    ax_acc.set_ylim(0, 1)
    ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
    fig.suptitle(textwrap.fill(title, 56))  # a long stage name would run past the figure's 6.1 inches
    return fig


@styled
def confusion_matrix_plot(matrix, class_names: Sequence[str], title: str) -> Figure:
    """Heat map of a confusion matrix (rows true, columns predicted), counts annotated, row-normalized colours."""
    matrix = np.asarray(matrix, dtype=np.int64)
    # Colour by the share of each true class, so a class with fewer test images is not paler.
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = canvas((6.0, 5.5))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, f"{count}", ha="center", va="center", fontsize=9,
                color="white" if shares[row, col] > 0.5 else "black")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8, format=PercentFormatter(1.0))
    colorbar.set_label("share of the true class")
    ax.set_title(title)
    return fig


@styled
def common_errors(top_confusions: Sequence[dict], title: str) -> Figure:
    """Horizontal bars of the (up to 10) most frequent "true → predicted" mistakes."""
    entries = list(top_confusions)[:10]
    fig, ax = canvas((6.0, min(0.28 * max(len(entries), 3) + 1.2, 4.1)))
    if entries:
        names = [f"{e['true']} → {e['predicted']}" for e in entries]
        counts = [e["count"] for e in entries]
        bars = ax.barh(names, counts, color=PALETTE["secondary"])
        ax.bar_label(bars, padding=3, fontsize=9)
        ax.invert_yaxis()  # the most frequent mistake on top
        ax.margins(x=0.1)
        ax.set_xlabel("test images")
        ax.grid(axis="y", visible=False)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassifications", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    return fig


@styled
def misclassified_examples(images: np.ndarray, true_labels: np.ndarray, predicted_labels: np.ndarray,
                           confidence: np.ndarray, class_names: Sequence[str],
                           title: str = "Misclassified test images") -> Figure:
    """Up to 16 wrong predictions, each titled "true: X / pred: Y (87%)" with the predicted-class confidence."""
    n = min(len(images), 16)
    ncols = min(max(n, 1), 4)
    nrows = max(math.ceil(n / ncols), 1)
    # Wide cells: the titles are longer than the images are wide, and a wide grid fits a 16:9 slide.
    fig, axes = canvas((3.0 * ncols, 1.25 * nrows + 0.5), nrows, ncols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        _image_axes(ax)
        if index >= n:
            ax.set_visible(False)
            continue
        ax.imshow(images[index], interpolation="nearest")
        ax.set_title(f"true: {class_names[int(true_labels[index])]} / "
                     f"pred: {class_names[int(predicted_labels[index])]} "
                     f"({100 * float(confidence[index]):.0f}%)", fontsize=9)
    if n == 0:
        axes[0, 0].set_visible(True)
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    fig.suptitle(title)
    return fig


@styled
def per_class_metrics(per_class: dict, title: str) -> Figure:
    """Grouped bars of precision, recall and F1 for each class."""
    names = list(per_class)
    fig, ax = canvas((10, 4.5))
    x = np.arange(len(names))
    width = 0.27
    for offset, metric in zip((-1, 0, 1), ("precision", "recall", "f1")):
        ax.bar(x + offset * width, [per_class[n][metric] for n in names], width,
               label="F1" if metric == "f1" else metric)
    ax.set_xticks(x, names, rotation=30)
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("class")
    _legend_outside(ax)
    ax.set_title(title)
    return fig


@styled
def model_comparison(results: dict) -> Figure:
    """Test accuracy of each stage in this run next to the study's reported accuracy (where it has one),
    both single views: where the run also averaged each image with its mirror, its single-view accuracy."""
    models = results.get("models", {})
    stages = table_stages(models)
    fig, ax = canvas((9.2, 3.5))
    x = np.arange(len(stages))
    width = 0.38
    for checked in (True, False):  # the study's numbers beside a stage not run here are drawn as outlines only
        reported = [i for i, s in enumerate(stages) if s.study_accuracy is not None and (s.name in models) == checked]
        if not reported:
            continue
        style = (dict(color=PALETTE["muted"], label="study (reported)") if checked else
                 dict(facecolor="none", edgecolor=PALETTE["muted"], linestyle="--",
                      label="study (reported; not run here)"))
        study = ax.bar(x[reported] - width / 2, [stages[i].study_accuracy for i in reported], width, **style)
        ax.bar_label(study, labels=[format_accuracy(stages[i].study_accuracy) for i in reported], padding=2,
                     fontsize=9)
    ran = [i for i, s in enumerate(stages) if s.name in models]
    accuracies = [single_view_test_accuracy(models[stages[i].name]) for i in ran]
    spreads = [_seed_sd(models[stages[i].name]) for i in ran]
    seeded = " ± sd over seeds" if any(spreads) else ""
    this_run = ax.bar(x[ran] + width / 2, accuracies, width, color=PALETTE["primary"], capsize=4,
                      yerr=spreads if seeded else None, label=f"this run (single view{seeded})")
    ax.bar_label(this_run, labels=[format_accuracy(a) for a in accuracies], padding=2, fontsize=9)
    for i, s in enumerate(stages):
        if s.name not in models:
            ax.text(x[i] + width / 2, 0.02, "not run", ha="center", va="bottom", color=PALETTE["red"])
        if s.study_accuracy is None:
            ax.text(x[i] - width / 2, 0.02, "not in\nstudy", ha="center", va="bottom", color=PALETTE["muted"],
                    fontsize=9)
    ax.set_xticks(x, [textwrap.fill(s.label, 14) for s in stages])
    ax.set_ylim(0, 1.05)  # room for the value labels above a bar near 100%
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("test accuracy")
    # Below the axes, so that the groups get the figure's whole width: 14 characters of a 9 pt label
    # take about an inch, and a legend at the side leaves six groups less than that each.
    fig.legend(loc="outside lower center", ncol=3)
    data = results.get("provenance", {}).get("data", "unknown data")
    fig.suptitle("Test accuracy: this run vs the study")
    ax.set_title(textwrap.fill(textwrap.shorten(f"Data: {data}", 160, placeholder="…"), 90), fontsize=9)
    return fig


def _seed_sd(entry: dict) -> float:
    """A stage's standard deviation of single-view test accuracy over its seeds; 0 for one run."""
    return entry.get("over_seeds", {}).get(single_view_key(entry), {}).get("sd", 0.0)


@styled
def accuracy_vs_cost(results: dict) -> Figure:
    """Each trained stage's single-view test accuracy (± sd over seeds, where it ran under several)
    against its training seconds on the run's hardware, log scale."""
    models = results.get("models", {})
    names = [s.name for s in table_stages(models) if s.name in models]
    fig, ax = canvas((7.5, 4.5))
    for name in names:
        seconds, accuracy = training_seconds(models, name), single_view_test_accuracy(models[name])
        ax.errorbar(seconds, accuracy, yerr=_seed_sd(models[name]), fmt="o", capsize=4, color=PALETTE["primary"])
        ax.annotate(stage(name).label, (seconds, accuracy), textcoords="offset points", xytext=(7, -4), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * 4)  # room for the labels right of the costliest stage
    # Seconds as plain numbers at 1, 2 and 5 per decade: a narrow range would otherwise label its
    # minor ticks in powers of ten ("3 × 10^0"), which run into each other.
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda seconds, _: f"{seconds:,g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("training seconds (a fine-tuned stage with its head), log scale")
    ax.set_ylabel("test accuracy (single view)")
    fig.suptitle("Accuracy versus training cost")
    prov = results.get("provenance", {})
    bars = "error bars: sd over seeds · " if any(_seed_sd(models[name]) for name in names) else ""
    ax.set_title(textwrap.fill(f"{bars}{prov.get('hardware', 'unknown hardware')} · "
                               f"{prov.get('data', 'unknown data')}", 90), fontsize=9)
    return fig
