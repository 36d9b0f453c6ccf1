"""Learning curves, seed spread and input resolution: how much labelled data transfer learning saves.

Every point is an ordinary `stages.Run` (the same stage code as `train`), run at another
training-set size, seed or image size. All of them share one `FeatureCache`, so each image
passes the frozen backbone once per image size, whatever the number of sizes and seeds; a
fine-tuned point trains on from its own head with the stage-2 recipe of `curve_backbone`.
At the run's own training size the points are the run's own stages, read from its results.json.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from .cache import FeatureCache
from .config import RunConfig
from .data import Dataset
from .provenance import collect_provenance, run_key, weights_label
from .publish import run_started, write_atomic
from .results import CURVES_FILE, RESULTS_FILE, load_results, seed_record
from .stages import Run, run_stage


# finished curve stages, one folder per everything that decides them: in OUT/.runs/, beside the feature cache
STAGES_DIR = "curve-stages"


def stages_root(out_dir: Path, key: str) -> Path:
    """Where the curve points train: one folder per `run_key` (configuration, data, weights and code version).

    A later run in which none of these changed finds every finished stage there and loads it
    (`fit_stage`) instead of training it again; settings that only choose which points run
    (`provenance.SELECTION_KEYS`) keep the folder, any other change lands in a new one.
    """
    return out_dir.resolve().parent / STAGES_DIR / key


def run_points(out_dir: Path, config: RunConfig, key: str) -> dict[tuple, dict]:
    """The points that the run in `out_dir` (notebook 02, `train`) already trained, keyed by stage, size and
    seed: every seed of every stage in its results.json, at its own training size. Only where that run had
    this very configuration, data, weights and code (its `run_key` is `key`), so a point there is the table's
    run itself."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        return {}
    results = load_results(path)
    if results["provenance"].get("run_key") != key:
        return {}
    size, points = config.train_size, {}
    for name, entry in results["models"].items():
        for run in entry.get("runs") or [seed_record(config.seed, entry)]:
            points[name, size, run["seed"]] = {
                "model": name, "train_size": size, "seed": run["seed"], "test_accuracy": run["test_accuracy"],
                "seconds": run["train_seconds"], "reused": True, "from_results": True}
    return points


def learning_curve_points(dataset: Dataset, config: RunConfig, weights: str, workdir: Path,
                          cache: FeatureCache, known: dict[tuple, dict] | None = None) -> list[dict]:
    """Every stage of `curve_models` at every size of `curve_sizes`, at its seeds (`curve_seed_list`).

    All stages of one size and seed share one run, so they train on the same images: the
    report pairs them by seed. A fine-tuned stage's head is recorded too (stage 2 starts from it).
    A size and seed of which `known` (`run_points`) holds every stage is taken from there."""
    points, known = [], known or {}
    for size in config.curve_size_list:
        stages = [name for name in config.curve_stage_list if not _capped(config, name, size)]
        if not stages:  # only fine-tuning was asked for, and the cap leaves it out at this size
            continue
        for seed in config.curve_seed_list(size):
            run_config = config.replace(train_size=size, seed=seed, models=",".join(stages))
            found = [known.get((stage, size, seed)) for stage in run_config.model_list]
            if all(found):  # all or none: a fine-tuned stage that trains here needs its head in the same run
                points += found
                continue
            run = Run(run_config, dataset, weights, Path(workdir) / f"n{size}-seed{seed}", cache=cache,
                      save_models=False)
            for stage in run_config.model_list:
                trained = run_stage(run, stage)
                points.append({"model": stage, "train_size": size, "seed": seed,
                               "test_accuracy": trained.metrics["test_accuracy"], "seconds": trained.stage.seconds,
                               "reused": trained.stage.reused})
    return points


def _capped(config: RunConfig, stage: str, size: int) -> bool:
    """Whether `curve_finetune_max_size` leaves fine-tuning out at `size`."""
    cap = config.curve_finetune_max_size
    return stage.endswith("_finetuned") and cap is not None and size > cap


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
    out_dir, started = Path(out_dir), run_started(out_dir) or datetime.now(timezone.utc)
    cache = FeatureCache.beside(out_dir)
    clock = time.perf_counter()
    key = run_key(config.to_dict(), dataset, weights)  # hashes the whole dataset: once per run
    stages, known = stages_root(out_dir, key), run_points(out_dir, config, key)
    points = learning_curve_points(dataset, config, weights, stages / "curves", cache, known)
    resolution = resolution_points(dataset, config, weights, stages / "resolution", cache)
    provenance = collect_provenance(dataset, weights_label(weights), started)
    this_run = {"finished": provenance["finished"], "seconds": time.perf_counter() - clock,
                "backbone_images_computed": cache.computed,
                "stages_trained": sum(not point["reused"] for point in points + resolution)}
    # feature_cost: a head's seconds count its features at the measured rate (stages._feature_seconds)
    results = {"profile": profile, "config": config.to_dict(), "backbone": config.curve_backbone,
               "feature_cost": "measured_rate",
               "provenance": provenance, **{k: v for k, v in this_run.items() if k != "finished"},
               "runs": _record_run(stages, this_run), "points": points, "resolution": resolution}
    write_atomic(out_dir / CURVES_FILE, json.dumps(results, indent=2) + "\n")
    return results


def _record_run(stages: Path, run: dict) -> list[dict]:
    """Every finished run of these stages, this one last: what the first one (which trained
    them) and each rerun cost. Kept beside the stages, so the history ends where they do."""
    path = stages / "runs.json"
    runs = [*(json.loads(path.read_text()) if path.is_file() else []), run]
    write_atomic(path, json.dumps(runs, indent=2) + "\n")
    return runs
