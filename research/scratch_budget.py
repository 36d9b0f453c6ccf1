"""The ResNet from scratch on the full profile, against issue #29's 60-minute budget and its 93% target.

No choice rests on this record: it measures what the `full` profile's scratch stage costs and
reaches on 2 CPU cores. Its single-view test accuracy is reported against the target only.

Usage (from the repository root; results.json of `train --profile full --set models=scratch`):
  python research/scratch_budget.py --results OUT/results/results.json
It writes research/results/scratch_full.json and its block of research/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab_records import record

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "research" / "results" / "scratch_full.json"
MARKERS = ("<!-- scratchfull:start -->", "<!-- scratchfull:end -->")
BUDGET_SECONDS = 3_600  # issue #29: at most 60 minutes of training on all the training images, 2 CPU cores
TARGET = 0.93  # issue #29: single-view test accuracy on the full set


def measure(results: dict) -> dict:
    """The scratch stage's cost and accuracy in one full-profile results.json (one seed)."""
    stage, data = results["models"]["scratch"], results["data"]
    seconds, epochs = stage["seconds"], stage["epochs"]
    provenance = results["provenance"]
    return {"train_images": data["train"], "epochs": epochs, "train_seconds": seconds,
            "eval_seconds": stage["eval_seconds"], "seconds_per_epoch": seconds / epochs,
            "within_budget": seconds <= BUDGET_SECONDS,
            "val_accuracy": stage.get("single_view_val_accuracy", stage["val_accuracy"]),
            "test_accuracy": stage.get("single_view_test_accuracy", stage["test_accuracy"]),
            "run": f"profile {results['profile']}, seed {results['config']['seed']}, {provenance['data']}, "
                   f"commit {provenance['git_commit'][:7]}, {provenance['hardware']}, "
                   f"instruction sets {', '.join(provenance.get('cpu_isa') or ['not recorded'])}"}


def markdown(document: dict) -> str:
    """The block of research/README.md: cost against the budget, accuracy against the target."""
    return "\n".join([
        "| training images | epochs | training seconds | seconds per epoch | evaluation seconds | "
        "validation (single view) | test (single view) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {document['train_images']:,} | {document['epochs']} | {document['train_seconds']:,.0f} | "
        f"{document['seconds_per_epoch']:,.1f} | {document['eval_seconds']:,.0f} | "
        f"{100 * document['val_accuracy']:.2f}% | {100 * document['test_accuracy']:.2f}% |", "",
        f"Training took {document['train_seconds'] / 60:,.1f} minutes, "
        f"{'within' if document['within_budget'] else 'over'} the budget of {BUDGET_SECONDS // 60} minutes; "
        f"test accuracy {100 * document['test_accuracy']:.2f}% against issue #29's target of {100 * TARGET:.0f}%. "
        f"Run: {document['run']}."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="results.json of the full-profile scratch run")
    document = measure(json.loads(parser.parse_args().results.read_text()))
    record(document, OUT, MARKERS, markdown(document))
    print(markdown(document))


if __name__ == "__main__":
    main()
