"""Learning curves, seed spread and input resolution: how much labelled data transfer learning saves.

Every point is an ordinary `stages.Run` (the same stage code as `train`), run at another
training-set size, seed or image size. All of them share one `FeatureCache`, so each image
passes the backbone once per image size, whatever the number of sizes and seeds; fine-tuning
is not part of the curves (it runs only at the study's size, in notebook 02).
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from .cache import FeatureCache
from .config import RunConfig
from .data import Dataset
from .plots import PALETTE, save_figure, styled
from .provenance import code_fingerprint, collect_provenance, weights_identity, weights_label
from .publish import write_atomic
from .stages import Run, run_stage
from .study import label


CACHE_DIR = "cache"  # beside the timestamped runs in OUT/.runs/, so a later run reuses the features
STAGES_DIR = "curve-stages"  # beside them too: finished curve stages, one folder per everything that decides them


def stages_root(out_dir: Path, dataset: Dataset, config: RunConfig, weights: str) -> Path:
    """Where the curve points train: one folder per configuration, data, weights and code version.

    A later run in which none of these changed finds every finished stage there and loads it
    (`fit_stage`) instead of training it again; any change lands in a new folder.
    """
    key = hashlib.sha256("\0".join([json.dumps(config.to_dict(), sort_keys=True), dataset.fingerprint(),
                                     weights_identity(weights), code_fingerprint()]).encode()).hexdigest()
    return out_dir.resolve().parent / STAGES_DIR / key[:20]


def learning_curve_points(dataset: Dataset, config: RunConfig, weights: str, workdir: Path,
                          cache: FeatureCache) -> list[dict]:
    """The CNN and the `curve_backbone` head at every size of `curve_sizes`, `curve_seeds` seeds each."""
    head = f"{config.curve_backbone}_head"
    points = []
    for size in config.curve_size_list:
        for seed in range(config.seed, config.seed + config.curve_seeds):
            run_config = config.replace(train_size=size, seed=seed, models=f"cnn,{head}")
            run = Run(run_config, dataset, weights, Path(workdir) / f"n{size}-seed{seed}", cache=cache,
                      save_models=False)
            for stage in ("cnn", head):
                trained = run_stage(run, stage)
                points.append({"model": stage, "train_size": size, "seed": seed,
                               "test_accuracy": trained.metrics["test_accuracy"], "seconds": trained.stage.seconds,
                               "reused": trained.stage.reused})
    return points


def resolution_points(dataset: Dataset, config: RunConfig, weights: str, workdir: Path,
                      cache: FeatureCache) -> list[dict]:
    """The `curve_backbone` head at the study's size and seed for each of `resolution_sizes`:
    test accuracy and how fast the backbone turned images into features at that size."""
    head = f"{config.curve_backbone}_head"
    points = []
    for size in config.resolution_size_list:
        run = Run(config.replace(image_size=size, models=head), dataset, weights, Path(workdir) / f"size{size}",
                  cache=cache, save_models=False)
        trained = run_stage(run, head)
        speed = cache.speed(run.transfers[config.curve_backbone], dataset, "train", size)
        images = sum(run.splits.sizes().values())
        points.append({"image_size": size, "test_accuracy": trained.metrics["test_accuracy"],
                       "reused": trained.stage.reused,
                       "features_per_second": speed["images_per_second"],
                       "feature_seconds": images / speed["images_per_second"], "images": images})
    return points


def run_learning_curves(dataset: Dataset, config: RunConfig, weights: str, out_dir: str | Path,
                        profile: str) -> dict:
    """Both studies, as the content of results/learning_curves.json (written to out_dir/results)."""
    out_dir, started = Path(out_dir), datetime.now(timezone.utc)
    cache = FeatureCache(out_dir.resolve().parent / CACHE_DIR)
    clock = time.perf_counter()
    stages = stages_root(out_dir, dataset, config, weights)
    points = learning_curve_points(dataset, config, weights, stages / "curves", cache)
    resolution = resolution_points(dataset, config, weights, stages / "resolution", cache)
    provenance = collect_provenance(dataset, weights_label(weights), started)
    this_run = {"finished": provenance["finished"], "seconds": time.perf_counter() - clock,
                "backbone_images_computed": cache.computed,
                "stages_trained": sum(not point["reused"] for point in points + resolution)}
    results = {"profile": profile, "config": config.to_dict(), "backbone": config.curve_backbone,
               "provenance": provenance, **{k: v for k, v in this_run.items() if k != "finished"},
               "runs": _record_run(stages, this_run), "points": points, "resolution": resolution}
    write_atomic(out_dir / "results" / "learning_curves.json", json.dumps(results, indent=2) + "\n")
    return results


def _record_run(stages: Path, run: dict) -> list[dict]:
    """Every finished run of these stages, this one last: what the first one (which trained
    them) and each rerun cost. Kept beside the stages, so the history ends where they do."""
    path = stages / "runs.json"
    runs = [*(json.loads(path.read_text()) if path.is_file() else []), run]
    write_atomic(path, json.dumps(runs, indent=2) + "\n")
    return runs


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
    for size in sorted(set(summary.train_size)):
        both = summary[summary.train_size == size].set_index("model")["mean"]
        if size in (summary.train_size.min(), largest):
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
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    for model, color in (("cnn", PALETTE["secondary"]), (f"{curves['backbone']}_head", PALETTE["primary"])):
        rows = summary[summary.model == model]
        ax.errorbar(rows.train_size, rows["mean"], yerr=rows["std"], marker="o", capsize=4, color=color,
                    label=f"{label(model)} ({int(rows['count'].max())} seeds)")
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(summary.train_size)), [f"{n:,}" for n in sorted(set(summary.train_size))])
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("labelled training images (80% train, 20% validation)")
    ax.set_ylabel("test accuracy")
    ax.legend(loc="best")
    fig.suptitle("How much labelled data does transfer learning save?")
    ax.set_title(textwrap.shorten(f"Data: {curves['provenance']['data']}; weights: {curves['provenance']['weights']}",
                                  120), fontsize=9)
    return fig


@styled
def resolution_cost_figure(curves: dict) -> Figure:
    """Head-only test accuracy against the seconds of feature extraction, one point per input size."""
    points = pd.DataFrame(curves["resolution"])
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(points.feature_seconds, points.test_accuracy, marker="o", color=PALETTE["primary"])
    for _, p in points.iterrows():
        ax.annotate(f"{p.image_size:.0f}px", (p.feature_seconds, p.test_accuracy), textcoords="offset points",
                    xytext=(6, -12))
    ax.set_xlim(0, points.feature_seconds.max() * 1.1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(f"seconds to compute features of {int(points.images.iloc[0]):,} images on this machine "
                  f"({curves['provenance']['device']})")
    ax.set_ylabel("head-only test accuracy")
    fig.suptitle(f"Input resolution vs cost: {label(curves['backbone'] + '_head')}")
    prov = curves["provenance"]
    ax.set_title(textwrap.shorten(f"Data: {prov['data']}; weights: {prov['weights']}; {prov['hardware']}", 140),
                 fontsize=9)
    return fig


def save_curve_figures(curves: dict, images_dir: str | Path) -> list[Path]:
    """learning_curve.png and resolution_cost.png in `images_dir`."""
    images_dir = Path(images_dir)
    return [save_figure(learning_curve_figure(curves), images_dir / "learning_curve.png"),
            save_figure(resolution_cost_figure(curves), images_dir / "resolution_cost.png")]
