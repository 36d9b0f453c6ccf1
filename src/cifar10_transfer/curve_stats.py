"""The learning curves' numbers: means per size, gaps with 95% intervals, crossings, data needed, seconds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .registry import parse_stage, stage_names

CONFIDENCE = 0.95  # of every interval of a gap
GAP_COLUMNS = ["train_size", "gap", "low", "high", "seeds"]


def curve_summary(curves: dict) -> pd.DataFrame:
    """Mean and standard deviation of test accuracy (fractions) per model and size, with the seed count."""
    frame = pd.DataFrame(curves["points"])
    summary = frame.groupby(["model", "train_size"])["test_accuracy"].agg(["mean", "std", "count"])
    return summary.fillna({"std": 0.0}).reset_index()


def curve_models(curves: dict) -> list[str]:
    """The stages the curves ran, in run order: from scratch first, then the transfer stages."""
    present = {point["model"] for point in curves["points"]}
    return [name for name in stage_names() if name in present]


def transfer_models(curves: dict) -> list[str]:
    """The curves' stages that start from a pretrained backbone (head-only, fine-tuned)."""
    return [name for name in curve_models(curves) if parse_stage(name)[0] is not None]


def reference_model(curves: dict) -> str:
    """The line every transfer line is measured against: the ResNet from scratch (the strong
    baseline) where the curves ran it, else the CNN (curves that ran only the CNN and the head)."""
    return "scratch" if "scratch" in curve_models(curves) else "cnn"


def paired_gaps(curves: dict, model: str, reference: str) -> pd.DataFrame:
    """Test accuracy of `model` minus `reference` per size (fractions): the mean over seeds of the
    seed-paired differences, and its 95% t interval (mean ± t(0.975, n-1) · sd / √n).

    Paired, because the stages of one size and seed trained on the same stratified draw of images
    (one run), so the draw's luck cancels in each difference. Seeds where either stage is missing
    are left out; one seed gives no interval (low and high NaN)."""
    frame = pd.DataFrame(curves["points"])
    wide = frame[frame.model.isin([model, reference])].pivot_table(
        index=["train_size", "seed"], columns="model", values="test_accuracy")
    if model not in wide or reference not in wide:
        return pd.DataFrame(columns=GAP_COLUMNS)
    rows = []
    for size, diffs in (wide[model] - wide[reference]).dropna().groupby(level="train_size"):
        n, mean = len(diffs), float(diffs.mean())
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * diffs.std() / math.sqrt(n)) if n > 1 else math.nan
        rows.append({"train_size": int(size), "gap": mean, "low": mean - half, "high": mean + half, "seeds": n})
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def log_interpolate(x0: float, y0: float, x1: float, y1: float, y: float) -> float:
    """The x between x0 and x1 where the straight line from (log x0, y0) to (log x1, y1) reaches y."""
    share = (y - y0) / (y1 - y0)
    return math.exp(math.log(x0) + share * (math.log(x1) - math.log(x0)))


def lead_falls_below(gaps: pd.DataFrame, threshold: float) -> dict | None:
    """Where the mean gap first falls to `threshold` or below, going up in size; None where it never does.

    {"size": the crossing, interpolated in log size between the last size above and the first at or
    below (that first size itself when it is the smallest measured), "before": the last size above
    (None then), "after": the first size at or below}."""
    sizes, values = gaps["train_size"].to_numpy(), gaps["gap"].to_numpy()
    below = np.flatnonzero(values <= threshold)
    if not len(below):
        return None
    i = int(below[0])
    if i == 0:
        return {"size": float(sizes[0]), "before": None, "after": int(sizes[0])}
    size = log_interpolate(sizes[i - 1], values[i - 1], sizes[i], values[i], threshold)
    return {"size": size, "before": int(sizes[i - 1]), "after": int(sizes[i])}


def images_for_accuracy(summary: pd.DataFrame, model: str, target: float) -> dict:
    """Labelled images `model` needs for a mean test accuracy of `target`: at the first size whose
    mean reaches it, interpolated in log size from the size before (whose mean is below).

    {"images": that number (None: not reached at any measured size), "at_smallest": reached
    already at the smallest measured size (nothing to interpolate from), "best": the highest
    mean, "best_size": its size}."""
    rows = summary[summary.model == model].sort_values("train_size")
    sizes, means = rows["train_size"].to_numpy(), rows["mean"].to_numpy()
    best = int(np.argmax(means))
    found = {"images": None, "at_smallest": False, "best": float(means[best]), "best_size": int(sizes[best])}
    reached = np.flatnonzero(means >= target)
    if len(reached):
        i = int(reached[0])
        found["at_smallest"] = i == 0
        found["images"] = float(sizes[0]) if i == 0 else log_interpolate(
            sizes[i - 1], means[i - 1], sizes[i], means[i], target)
    return found


def training_seconds(curves: dict) -> pd.DataFrame:
    """Mean training seconds over seeds, one row per size and one column per stage (run order).

    A fine-tuned point's seconds include its head's at the same size and seed: stage 2 starts
    from stage 1, so a fine-tuned model costs both."""
    frame = pd.DataFrame(curves["points"])
    own = frame.set_index(["model", "train_size", "seed"])["seconds"]
    heads = [(name.replace("_finetuned", "_head"), size, seed) for name, size, seed in own.index]
    frame["cost"] = own.to_numpy() + np.array([
        own.get(head, 0.0) if head[0] != name else 0.0 for head, name in zip(heads, frame["model"])])
    table = frame.pivot_table(index="train_size", columns="model", values="cost", aggfunc="mean")
    return table[curve_models(curves)]
