"""The results files: their paths, schema version, assembly, validated loading and the best model."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from .errors import UserError

# Version 2 added this key and chose `best_model` by validation accuracy; a file without the key is version 1.
# Version 3 adds the entries of stages trained over several seeds (`runs`, `over_seeds`, `shown_seed`).
SCHEMA_VERSION = 3
# Paths relative to a run's directory (OUT, or the working directory of a run before it is published).
RESULTS_FILE = "results/results.json"
CURVES_FILE = "results/learning_curves.json"  # notebook 03's learning curves
EDA_FILE = "results/eda.json"  # notebook 01's per-class counts and colours, and its findings
HISTORIES_DIR = "results/histories"  # one CSV of per-epoch metrics per stage
RUN_FIRST = "run `python -m cifar10_transfer train` or `make reproduce` first."


def assemble_results(*, profile: str, config: dict, provenance: dict, execution: dict, data: dict, models: dict,
                     not_run: dict) -> dict:
    """The content of results.json from plain values, stamped with its schema version and best model."""
    results = {"schema_version": SCHEMA_VERSION, "profile": profile, "config": config, "provenance": provenance,
               "execution": execution, "data": data, "models": models, "not_run": not_run}
    return {**results, "best_model": best_model(results)}


def best_model(results: dict) -> str | None:
    """The stage with the highest validation accuracy (the first on a tie); None when none finished.

    Never test accuracy: picking on the test set would turn its number from an estimate into the
    maximum of several. Where the run evaluated with the mirror (`test_time_flip`), an entry's
    reported test accuracy is mirror-averaged, so its mirror-averaged validation accuracy
    (`test_time_flip.val_accuracy`) is compared, like with like. Computed rather than read from
    the file's `best_model`, so results written before version 2 are judged the same way.
    """
    models = results["models"]

    def validation(name: str) -> float:
        if "runs" in models[name]:  # over seeds: their mean, in the view the runs were evaluated in
            return statistics.fmean(run["val_accuracy"] for run in models[name]["runs"])
        return models[name].get("test_time_flip", {}).get("val_accuracy", models[name]["val_accuracy"])

    return max(models, key=validation, default=None)


def summarise_seeds(values: list[float]) -> dict:
    """Mean, sample standard deviation and 95% confidence interval of the mean (Student's t with
    n - 1 degrees of freedom) of one number measured under two or more seeds."""
    from scipy.stats import t  # imported here: the command line starts without it

    if len(values) < 2:
        raise ValueError(f"a spread over seeds needs two or more values, got {len(values)}")
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = float(t.ppf(0.975, len(values) - 1)) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "n": len(values)}


def single_view_key(entry: dict, split: str = "test") -> str:
    """The key of a stage's single-view `split` accuracy, in its entry's `test_time_flip` block and
    `over_seeds`: the one stored beside the mirror-averaged accuracy, or the plain one."""
    return f"single_view_{split}_accuracy" if "test_time_flip" in entry else f"{split}_accuracy"


def predictions_words(entry: dict) -> str | None:
    """How a stage's confusions and per-class scores were predicted, for their labels: "mirror-averaged"
    under `test_time_flip` (they come from the evaluated view), else None (one view, as the study)."""
    return "mirror-averaged" if "test_time_flip" in entry else None


def validation_spreads(models: dict) -> dict[str, dict]:
    """Each stage trained under several seeds: the summary (sd, n, ...) of its single-view validation accuracy."""
    return {name: m["over_seeds"][single_view_key(m, "val")] for name, m in models.items() if "over_seeds" in m}


def stage_seconds(entry: dict) -> float:
    """One stage's training seconds: the mean over its seeds' runs, like its accuracies, or its one run's."""
    runs = entry.get("runs")
    return sum(run["train_seconds"] for run in runs) / len(runs) if runs else entry.get("seconds", 0.0)


def training_seconds(models: dict, name: str) -> float:
    """Stage `name`'s training seconds; a fine-tuned stage's include its head's, which it starts from."""
    head = models.get(name.replace("_finetuned", "_head")) if name.endswith("_finetuned") else None
    return stage_seconds(models[name]) + (stage_seconds(head) if head else 0.0)


def single_view_test_accuracy(entry: dict) -> float:
    """A stage's test accuracy from one view per image, as the study measured: under `test_time_flip`
    the single-view accuracy stored beside the mirror-averaged one."""
    return entry.get("test_time_flip", {}).get("single_view_test_accuracy", entry["test_accuracy"])


def difference_interval(a: dict, b: dict, test_images: int, single_view: bool = False) -> tuple[float, float, float]:
    """(a − b, low, high): two stages' (mean) test accuracies and a 95% interval of their difference.

    Its variance adds, for each stage, the test set's binomial error p(1 − p) / `test_images` and,
    where it ran under seeds, the squared standard error of its mean over them; the half-width is
    that standard deviation times Student's t with the fewest seeds' n − 1 degrees of freedom (the
    normal 1.96 for single runs). The two stages' errors on the same test images are taken as
    independent: where they are correlated, as usual, the interval is wider than it need be.
    `single_view` compares single-view accuracies (`single_view_test_accuracy`).
    """
    from scipy.stats import norm, t  # imported here: the command line starts without it

    accuracy = single_view_test_accuracy if single_view else (lambda entry: entry["test_accuracy"])
    variance, seeds = 0.0, []
    for entry in (a, b):
        p = accuracy(entry)
        variance += p * (1 - p) / test_images
        spread = entry.get("over_seeds", {}).get(single_view_key(entry) if single_view else "test_accuracy")
        if spread:
            variance += spread["sd"] ** 2 / spread["n"]
            seeds.append(spread["n"])
    quantile = float(t.ppf(0.975, min(seeds) - 1)) if seeds else float(norm.ppf(0.975))
    difference, half = accuracy(a) - accuracy(b), quantile * math.sqrt(variance)
    return difference, difference - half, difference + half


def seed_record(seed: int, entry: dict) -> dict:
    """One seed's run of a stage, from its single-run entry: accuracies in the view it was evaluated
    in (mirror-averaged under `test_time_flip`, with the single views beside) and its seconds."""
    flip = entry.get("test_time_flip")
    record = {"seed": seed, "val_accuracy": flip["val_accuracy"] if flip else entry["val_accuracy"],
              "test_accuracy": entry["test_accuracy"], "train_seconds": entry["seconds"],
              "eval_seconds": entry["eval_seconds"]}
    if flip:
        record.update(single_view_val_accuracy=flip["single_view_val_accuracy"],
                      single_view_test_accuracy=flip["single_view_test_accuracy"])
    return record


def combine_seeds(entries: dict[int, dict]) -> dict:
    """The results entry of a stage trained under each seed of `entries` (seed: its single-run entry).

    Accuracies are means over the seeds, each summarised in `over_seeds`, and `evaluation` names
    their view; everything that describes one model (history, confusions, per-class scores, loss,
    seconds) is that of `shown_seed`, the run with the median validation accuracy (the lower
    middle one for an even count; ties go to the smaller seed).
    """
    runs = [seed_record(seed, entry) for seed, entry in entries.items()]
    shown = sorted(runs, key=lambda run: (run["val_accuracy"], run["seed"]))[(len(runs) - 1) // 2]["seed"]
    keys = [key for key in runs[0] if key.endswith("accuracy")]
    over_seeds = {key: summarise_seeds([run[key] for run in runs]) for key in keys}
    flip = "test_time_flip" in entries[shown]
    combined = {**entries[shown], "val_accuracy": over_seeds["val_accuracy"]["mean"],
                "test_accuracy": over_seeds["test_accuracy"]["mean"],
                "evaluation": "flip" if flip else "single_view", "shown_seed": shown, "runs": runs,
                "over_seeds": over_seeds}
    if flip:  # the same block as a single run's, of means, so every reader of it sees the seeds' summary
        combined["test_time_flip"] = {"val_accuracy": over_seeds["val_accuracy"]["mean"],
                                      **{key: over_seeds[key]["mean"] for key in keys if key.startswith("single")}}
    return combined


def _load(path: str | os.PathLike, kind: str, required: dict[str, type]) -> dict:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: {RUN_FIRST}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not a readable {kind} file ({error}): {RUN_FIRST}") from None
    missing = [key for key, expected in required.items()
               if not isinstance(document, dict) or not isinstance(document.get(key), expected)]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: {RUN_FIRST}")
    version = document.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UserError(f"{path} has schema version {version}, which this code does not read "
                        f"(it reads 1 to {SCHEMA_VERSION}): update cifar10-transfer.")
    return document


def load_results(path: str | os.PathLike) -> dict:
    """Read results.json; a missing, unreadable or incomplete file raises UserError."""
    return _load(path, "results", {"config": dict, "provenance": dict, "data": dict, "models": dict})


def load_curves(path: str | os.PathLike) -> dict | None:
    """learning_curves.json; None where notebook 03 did not run, UserError where unreadable or incomplete."""
    if not Path(path).is_file():
        return None
    return _load(path, "learning-curves",
                 {"backbone": str, "provenance": dict, "points": list, "resolution": list})


def load_published(root: str | os.PathLike) -> tuple[dict, dict | None, dict | None]:
    """A run's results, learning curves and EDA summary under `root` (the last two None where absent)."""
    root = Path(root)
    return load_results(root / RESULTS_FILE), load_curves(root / CURVES_FILE), load_eda(root / EDA_FILE)


def load_eda(path: str | os.PathLike) -> dict | None:
    """eda.json; None where notebook 01 did not write one (runs before it did), UserError where unreadable."""
    if not Path(path).is_file():
        return None
    return _load(path, "EDA", {"classes": dict, "findings": dict})
