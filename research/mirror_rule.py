"""The test-time mirror re-decided on validation: per stage, the paired gain of the mirror over the
single view across the seeds of one run, against its standard error.

The rule, committed before the runs it judges finished (research/README.md, "The test-time mirror,
re-decided over seeds"): `test_time_flip` becomes the default only if every trained stage's mean
paired validation gain (mirror-averaged minus single view, seed by seed) is larger than its standard
error sd/sqrt(n). Otherwise the single view stays the default and the mirror is a labelled side
finding. Test accuracy is never read.

Usage (from the repository root, on a results.json made with test_time_flip=true and seeds):
  python research/mirror_rule.py --results results/results.json
It writes research/results/mirror_rule.json and the block of research/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab_records import mean_and_standard_error, record

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "research" / "results" / "mirror_rule.json"
START, END = "<!-- mirror:start -->", "<!-- mirror:end -->"  # the block of research/README.md


def stage_gains(entry: dict) -> dict:
    """One stage's paired validation gains (mirror − single view, per seed), their mean and standard error.

    A stage without two seeds' runs of both views has no standard error, so it cannot pass the rule."""
    runs = [run for run in entry.get("runs", []) if "single_view_val_accuracy" in run]
    gains = {run["seed"]: run["val_accuracy"] - run["single_view_val_accuracy"] for run in runs}
    mean, se = mean_and_standard_error(gains.values())
    return {"gains": gains, "mean": mean, "se": se, "passes": se is not None and mean > se}


def decide(results: dict) -> dict:
    """The committed rule applied to every trained stage of `results` (one run's results.json)."""
    stages = {name: stage_gains(entry) for name, entry in results["models"].items()}
    failing = [name for name, stage in stages.items() if not stage["passes"]]
    if failing:
        why = f"{', '.join(failing)}: mean gain not larger than its standard error"
    else:
        why = "every trained stage's mean gain is larger than its standard error"
    return {"stages": stages, "default_test_time_flip": not failing and bool(stages), "why": why}


def markdown(document: dict) -> str:
    """The block of research/README.md: each stage's gains, mean ± standard error, and the decision."""
    lines = ["| stage | seeds | gain per seed (points) | mean gain ± standard error | larger than its SE |",
             "|---|---:|---|---:|---|"]
    for name, stage in document["stages"].items():
        per_seed = ", ".join(f"{seed}: {100 * gain:+.2f}" for seed, gain in stage["gains"].items())
        mean = f"{100 * stage['mean']:+.2f}" if stage["mean"] is not None else "n/a"
        se = f" ± {100 * stage['se']:.2f}" if stage["se"] is not None else ""
        lines.append(f"| {name} | {len(stage['gains'])} | {per_seed} | {mean}{se} | "
                     f"{'yes' if stage['passes'] else 'no'} |")
    default = "mirror (test_time_flip=true)" if document["default_test_time_flip"] else "single view"
    lines += ["", f"Decision: the default is the {default} ({document['why']}). Run: {document['run']}."]
    return "\n".join(lines)


def report(results_path: Path) -> dict:
    """Apply the rule to `results_path`, write research/results/mirror_rule.json and the README block."""
    results = json.loads(results_path.read_text())
    provenance = results["provenance"]
    document = {"run": f"profile {results['profile']}, {provenance['data']}, weights {provenance['weights']}, "
                       f"commit {provenance['git_commit'][:7]}, {provenance['hardware']}",
                **decide(results)}
    record(document, OUT, (START, END), markdown(document))
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True)
    document = report(parser.parse_args().results)
    print(markdown(document))


if __name__ == "__main__":
    main()
