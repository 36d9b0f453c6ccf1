"""The learning curves' report: findings, tables, seed spread, wall-clock and figures, from learning_curves.json."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from .curve_stats import (curve_models, curve_summary, images_for_accuracy, lead_falls_below, paired_gaps,
                          reference_model, training_seconds, transfer_models)
from .plots import PALETTE, canvas, styled
from .registry import parse_stage
from .study import label

TARGETS = (0.8, 0.9)  # test accuracies whose price in labelled images the findings state
LEAD_THRESHOLD = 0.02  # the figure marks where a transfer line's lead over the reference falls below 2 points
# The curves compute each image's backbone features once and share them across sizes and seeds. Curves made
# before `feature_cost` was recorded counted in a transfer point's seconds only the features no earlier point
# had computed (they depend on the run order); later ones count every feature at the measured rate.
SHARED_FEATURES = ("; a transfer point's seconds count only the backbone features that no earlier point had "
                   "computed, as all sizes and seeds share them")
RATE_FEATURES = ("; a transfer point's seconds include its training and validation images' backbone features "
                 "at the measured rate of the machine that ran them, whether or not an earlier point had computed them")


def _features_note(curves: dict, models) -> str:
    """How a transfer point's seconds count its features (nothing where no line is a transfer line)."""
    if not _transfer(models):
        return ""
    return RATE_FEATURES if curves.get("feature_cost") == "measured_rate" else SHARED_FEATURES


def run_times(curves: dict) -> str:
    """What the curves cost: their points' training seconds summed, which a resumed run counts whole (its
    wall-clock is only its last leg's), and the wall-clock of the latest rerun, where one followed."""
    points = curves["points"]
    text = f"training of the {len(points)} curve points {sum(p['seconds'] for p in points) / 60:.1f} min in all"
    runs = curves.get("runs") or []  # files written before runs were recorded hold none
    if len(runs) < 2:
        return text
    last = runs[-1]
    return (f"{text}; a rerun with the features and stages kept {last['seconds'] / 60:.1f} min wall-clock, "
            f"{last['backbone_images_computed']:,} images through the backbone"
            + (f", {last['stages_trained']} stages trained" if "stages_trained" in last else ""))


def _mirrored(curves: dict) -> bool:
    """Whether the curves' points averaged each test image with its mirror (`test_time_flip`)."""
    return bool(curves.get("config", {}).get("test_time_flip"))


def _evaluation_words(curves: dict) -> str:
    """How the curves' points were evaluated: single views, or each image averaged with its mirror."""
    if _mirrored(curves):
        return "each test image's probabilities averaged with its mirror image's"
    return "single views, as the study's"


def _name(model: str) -> str:
    """A stage's label without its parenthesis: sentences name the reference often, the legend says it once."""
    return label(model).split(" (")[0]


def _points(gap: float) -> str:
    return f"{100 * gap:+.1f}"


def _interval(row) -> str:
    """A gap's 95% interval in points, e.g. "+33.1 to +41.7", or why there is none."""
    return "1 seed, no interval" if row.seeds < 2 else f"{_points(row.low)} to {_points(row.high)}"


def _about(size: float) -> str:
    """A size read off an interpolation, to two significant figures: 14,123.4 -> "about 14,000"."""
    return f"about {float(f'{size:.2g}'):,.0f}"


def _match(summary: pd.DataFrame, model: str, reference: str) -> str:
    """Which size of `model` first matches what `reference` reached at the largest size."""
    largest = summary[summary.model == reference]["train_size"].max()
    best = summary[(summary.model == reference) & (summary.train_size == largest)]["mean"].iloc[0]
    rows = summary[summary.model == model].sort_values("train_size")
    matching = rows[rows["mean"] >= best]
    if not len(matching):
        return (f"No size of the {_name(model)} reaches the {_name(reference)}'s {100 * best:.1f}% "
                f"at {largest:,} images.")
    first = matching.iloc[0]
    return (f"The {_name(model)} with {first.train_size:,} labelled images ({100 * first['mean']:.1f}%) "
            f"matches the {_name(reference)} with {largest:,} ({100 * best:.1f}%).")


def _gap_sentence(model: str, reference: str, gaps: pd.DataFrame) -> str:
    """The seed-paired gap at the smallest and the largest size, with its 95% interval."""
    ends = [gaps.iloc[0], gaps.iloc[-1]] if len(gaps) > 1 else [gaps.iloc[0]]
    parts = [f"{_points(row.gap)} points at {int(row.train_size):,} images ({_interval(row)})" for row in ends]
    return (f"{_name(model)} minus {_name(reference)}, paired by seed with a 95% t interval: "
            f"{' and '.join(parts)}.")


def _crossing_sentence(model: str, reference: str, gaps: pd.DataFrame) -> str:
    """Where the mean gap first falls to 0 or below: where `model` stops beating `reference`."""
    found = lead_falls_below(gaps, 0.0)
    first, last = gaps.train_size.iloc[0], gaps.train_size.iloc[-1]
    sizes = f"{first:,} to {last:,} images" if first != last else f"{first:,} images, the only one it ran"
    if found is None:
        return f"The {_name(model)} beats the {_name(reference)} in the mean at every measured size ({sizes})."
    if found["before"] is None:
        return f"The {_name(model)} does not beat the {_name(reference)} even at {found['after']:,} images."
    return (f"The {_name(model)} stops beating the {_name(reference)} between {found['before']:,} and "
            f"{found['after']:,} images: the mean gap reaches 0 at {_about(found['size'])} (log interpolation).")


def _target_sentence(summary: pd.DataFrame, models: list[str], target: float) -> str:
    """The labelled images each stage needs for `target` test accuracy (mean over seeds)."""
    parts = []
    for model in models:
        found = images_for_accuracy(summary, model, target)
        if found["images"] is None:
            words = f"not reached (best {100 * found['best']:.1f}% at {found['best_size']:,})"
        elif found["at_smallest"]:
            words = f"{found['images']:,.0f} or fewer (the smallest size measured)"
        else:
            words = _about(found["images"])
        parts.append(f"{_name(model)} {words}")
    return f"Labelled images for {100 * target:.0f}% test accuracy (log interpolation): {'; '.join(parts)}."


def _seconds_sentence(curves: dict) -> str:
    """Each stage's training seconds at the largest size (mean over seeds), or at the largest it ran."""
    table = training_seconds(curves)
    largest, parts = table.index[-1], []
    for model in table.columns:
        ran = table[model].dropna()
        parts.append(f"{_name(model)} {ran.iloc[-1]:,.0f} s" + (f" (at {ran.index[-1]:,})" if ran.index[-1] != largest
                                                               else ""))
    tuned = " (fine-tuned: with its head)" if _fine_tuned(table.columns) else ""
    return (f"Training seconds at {largest:,} images, mean over seeds{tuned}: {'; '.join(parts)}"
            f"{_features_note(curves, table.columns)}.")


def _transfer(models) -> bool:
    return any(parse_stage(model)[0] is not None for model in models)


def _fine_tuned(models) -> bool:
    return any(parse_stage(model)[1] == "finetuned" for model in models)


def lead_findings(curves: dict) -> list[str]:
    """Where each transfer line stops beating the reference (`reference_model`) and the labelled
    images each stage needs for TARGETS: the slide beside the figure."""
    summary, reference = curve_summary(curves), reference_model(curves)
    out = [_crossing_sentence(model, reference, paired_gaps(curves, model, reference))
           for model in transfer_models(curves)]
    return out + [_target_sentence(summary, curve_models(curves), target) for target in TARGETS]


def gap_findings(curves: dict) -> list[str]:
    """What each transfer line's pretraining is worth against the reference: the size that matches
    the reference's largest, the seed-paired gaps at both ends, and what each stage cost."""
    summary, reference, transfers = curve_summary(curves), reference_model(curves), transfer_models(curves)
    out = [_match(summary, model, reference) for model in transfers]
    out += [_gap_sentence(model, reference, paired_gaps(curves, model, reference)) for model in transfers]
    return out + [_seconds_sentence(curves)]


def seed_words(summary: pd.DataFrame) -> str:
    """How many seeds a point averages: "3 seeds", or "3 seeds (1 at 20,000 and 50,000 images)" where fewer
    ran at some sizes (`curve_single_seed_above`)."""
    most = int(summary["count"].max())
    fewer = summary[summary["count"] < most].groupby("train_size")["count"].min()
    if fewer.empty:
        return f"{most} seeds"
    sizes = " and ".join(f"{size:,}" for size in fewer.index)
    return f"{most} seeds ({int(fewer.min())} at {sizes} images)"


def spread_findings(curves: dict) -> list[str]:
    """How far the seeds spread each stage's test accuracy, over the sizes with two or more seeds."""
    summary, out = curve_summary(curves), []
    if int(summary["count"].max()) < 2:
        return []
    words = seed_words(summary)
    for model in curve_models(curves):
        rows = summary[(summary.model == model) & (summary["count"] > 1)]
        if rows.empty:
            continue
        out.append(f"{label(model)}: {words} spread by at most ±{100 * rows['std'].max():.1f} points "
                   f"(standard deviation), ±{100 * rows['std'].mean():.1f} on average over the sizes.")
    return out


def resolution_findings(curves: dict) -> list[str]:
    """The input-size trade: the best head's accuracy against the cheapest size's, and their feature speed."""
    resolution = pd.DataFrame(curves["resolution"])
    if len(resolution) < 2:
        return []
    best, cheapest = resolution.loc[resolution.test_accuracy.idxmax()], resolution.iloc[0]
    return [f"Input size, one run each: the head's highest test accuracy is {100 * best.test_accuracy:.1f}% at "
            f"{best.image_size:.0f}px; at {cheapest.image_size:.0f}px it is {100 * cheapest.test_accuracy:.1f}%, "
            f"with features {best.feature_seconds / cheapest.feature_seconds:.1f}x faster "
            f"({curves['provenance']['hardware']}).",
            f"Each size trains the head once (seed {curves['config'].get('seed', 'unknown')}) on the features of "
            f"{int(resolution.images.iloc[0]):,} images (the study size's training, validation and test images), "
            "so differences of a fraction of a point between sizes are within run-to-run noise."]


def curve_findings(curves: dict) -> list[str]:
    """Every sentence computed from the curves: learning curves, seed spread, input resolution."""
    return lead_findings(curves) + gap_findings(curves) + spread_findings(curves) + resolution_findings(curves)


def accuracy_table(curves: dict) -> pd.DataFrame:
    """Display strings, one row per size: each stage's test accuracy (mean ± standard deviation
    over seeds) and each transfer line's seed-paired gap to the reference in points, with its 95% interval."""
    summary, reference = curve_summary(curves), reference_model(curves)
    table = pd.DataFrame(index=pd.Index(sorted(set(summary.train_size)), name="images"))
    for model in curve_models(curves):
        rows = summary[summary.model == model].set_index("train_size")
        table[label(model)] = [f"{100 * rows.at[n, 'mean']:.1f}% ± {100 * rows.at[n, 'std']:.1f}"
                               if n in rows.index else "—" for n in table.index]
    for model in transfer_models(curves):
        gaps = paired_gaps(curves, model, reference).set_index("train_size")
        table[f"{_name(model)} − {_name(reference)} (points, 95% CI)"] = [
            f"{_points(gaps.at[n, 'gap'])} ({_interval(gaps.loc[n])})" if n in gaps.index else "—"
            for n in table.index]
    return table.reset_index()


def seconds_table(curves: dict) -> pd.DataFrame:
    """Display strings, one row per size: each stage's training seconds (mean over seeds; fine-tuned with its head)."""
    table = training_seconds(curves)
    shown = pd.DataFrame({label(model): [f"{s:,.0f}" if s == s else "—" for s in table[model]]
                          for model in table.columns}, index=pd.Index(table.index, name="images"))
    return shown.reset_index()


def curve_tables_markdown(curves: dict) -> str:
    """Both tables with a line saying what each holds, as the README shows them."""
    reference = _name(reference_model(curves))
    return "\n\n".join([
        f"Test accuracy per size ({_evaluation_words(curves)}; mean ± standard deviation over seeds) and each "
        f"transfer line minus the {reference}, "
        "the mean of the seed-paired differences with its 95% t interval:", markdown_table(accuracy_table(curves)),
        "Training seconds per size (mean over seeds"
        + ("; a fine-tuned model's include its head's" if _fine_tuned(curve_models(curves)) else "")
        + _features_note(curves, curve_models(curves)) + "):",
        markdown_table(seconds_table(curves))])


def markdown_table(frame: pd.DataFrame) -> str:
    """A display-string table as Markdown, the first column (the sizes) left-aligned."""
    rows = [[f"{value:,}" if isinstance(value, int) else str(value) for value in row]
            for row in frame.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(str(c) for c in frame.columns) + " |",
                      "|---|" + "---:|" * (len(frame.columns) - 1), *("| " + " | ".join(r) + " |" for r in rows)])


def seed_spread(curves: dict, train_size: int) -> dict[str, tuple[float, float, int]]:
    """(mean, std, seeds) of each curve model at `train_size`, for the main table."""
    summary = curve_summary(curves)
    rows = summary[summary.train_size == train_size]
    return {r.model: (float(r["mean"]), float(r["std"]), int(r["count"])) for _, r in rows.iterrows()}


# One colour per kind of line; text at least 10 pt in the 8-inch figure, so at least 9 pt on the slide
# that shows it about 7.3 inches wide.
LINE_COLORS = {"cnn": PALETTE["secondary"], "scratch": PALETTE["red"], "head": PALETTE["primary"],
               "finetuned": PALETTE["tertiary"]}
SLIDE_TEXT = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 12, "figure.titlesize": 14,
              "xtick.labelsize": 11, "ytick.labelsize": 11, "legend.fontsize": 10.5}


@styled
def learning_curve_figure(curves: dict) -> Figure:
    """Test accuracy against training-set size (log scale), one line per stage (mean ± standard
    deviation over seeds), each transfer line marked where its lead over the reference falls below
    LEAD_THRESHOLD."""
    with rc_context(SLIDE_TEXT):
        summary, reference = curve_summary(curves), reference_model(curves)
        fig, ax = canvas((7.3, 5.5))
        for model in curve_models(curves):
            rows = summary[summary.model == model]
            ax.errorbar(rows.train_size, rows["mean"], yerr=rows["std"], marker="o", capsize=4,
                        color=LINE_COLORS[parse_stage(model)[1]], label=label(model))
        _mark_lead_ends(ax, curves, summary, reference)
        sizes = sorted(set(summary.train_size))
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes], rotation=30 if len(sizes) > 6 else 0)
        ax.minorticks_off()
        ax.margins(y=0.1)  # room for a marker's size above the top line
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set(xlabel="labelled training images (80% train, 20% validation)",
               ylabel="test accuracy" + (" (mirror-averaged)" if _mirrored(curves) else ""))
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("lead over"))  # the marker last
        # below the axes, where no line can run under it
        fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center", ncol=2)
        fig.suptitle("How much labelled data does transfer learning save?")
        prov = curves["provenance"]
        bars = (f"error bars: mean ± standard deviation over {seed_words(summary)}" if summary["count"].max() > 1
                else "one seed: no error bars")
        ax.set_title(f"{bars}\n"
                     + textwrap.shorten(f"data: {prov['data']}; weights: {prov['weights']}", 90), fontsize=10)
    return fig


def _mark_lead_ends(ax, curves: dict, summary: pd.DataFrame, reference: str) -> None:
    """A diamond on each transfer line where its seed-paired mean lead over `reference` falls below
    LEAD_THRESHOLD (log-interpolated), with one legend entry for them all."""
    marked = False
    for model in transfer_models(curves):
        found = lead_falls_below(paired_gaps(curves, model, reference), LEAD_THRESHOLD)
        if found is None:
            continue
        rows = summary[summary.model == model].sort_values("train_size")
        y = np.interp(np.log(found["size"]), np.log(rows.train_size.to_numpy(float)), rows["mean"])
        ax.plot([found["size"]], [y], marker="D", markersize=13, markerfacecolor="none", markeredgewidth=2,
                color="black", linestyle="none",
                label=None if marked else f"lead over {_name(reference)} < {100 * LEAD_THRESHOLD:.0f} points")
        ax.annotate(f"{_about(found['size'])}", (found["size"], y), textcoords="offset points", xytext=(0, 12),
                    ha="center", fontsize=10)
        marked = True


@styled
def resolution_cost_figure(curves: dict) -> Figure:
    """Head-only test accuracy against the seconds of feature extraction, one point per input size."""
    points = pd.DataFrame(curves["resolution"])
    fig, ax = canvas((7.3, 5.0))
    ax.plot(points.feature_seconds, points.test_accuracy, marker="o", color=PALETTE["primary"])
    for _, p in points.iterrows():
        ax.annotate(f"{p.image_size:.0f}px", (p.feature_seconds, p.test_accuracy), textcoords="offset points",
                    xytext=(6, -12))
    ax.set_xlim(0, points.feature_seconds.max() * 1.1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(xlabel=f"seconds to compute features of {int(points.images.iloc[0]):,} images on the machine above "
                  f"({curves['provenance']['device']})", ylabel="head-only test accuracy")
    fig.suptitle(f"Input resolution vs cost: {label(curves['backbone'] + '_head')}")
    prov = curves["provenance"]
    ax.set_title(textwrap.fill(f"Data: {prov['data']}; weights: {prov['weights']}; {prov['hardware']}", 90),
                 fontsize=9)
    return fig
