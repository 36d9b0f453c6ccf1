"""The results files: their paths, schema version, assembly, validated loading and the best model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UserError

# Version 2 added this key and chose `best_model` by validation accuracy; a file without the key is version 1.
SCHEMA_VERSION = 2
# Paths relative to a run's directory (OUT, or the working directory of a run before it is published).
RESULTS_FILE = "results/results.json"
CURVES_FILE = "results/learning_curves.json"  # notebook 03's learning curves
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
        return models[name].get("test_time_flip", {}).get("val_accuracy", models[name]["val_accuracy"])

    return max(models, key=validation, default=None)


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
