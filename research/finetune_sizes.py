"""EfficientNet-Lite0's input size compared on validation: 224 px (the study's) against cheaper
sizes, at three seeds each, in one process on one machine.

Two comparisons, each with its rule committed before the runs it judges finished (research/README.md):
- `train-size`: stage 2 trains at a smaller side (`finetune_image_size`) and is evaluated at 224 px.
- `throughout`: the head, stage 2 and evaluation all at one smaller side: 128 px, the side BiT's
  HyperRule gives images under 96x96 px, or 96 px.
In both, a candidate may become the default only if its mean stage-2 seconds are at most a third
of 224 px's in the same run. Among those, the one with the highest mean validation accuracy
(single view) becomes the default if that mean is no more than 0.3 points below 224 px's;
otherwise 224 px stays. Test accuracy is recorded for the record, never read by the rule.

Each (seed, candidate) is an ordinary `stages.Run` with `run_all`, sharing one feature cache per
machine, so a rerun (`... run` again) loads every finished stage and only trains what is missing.
`report` reads the runs' results.json files, applies the rule and writes the comparison's JSON
under research/results/ and its block of research/README.md.

Usage:
  python research/finetune_sizes.py run --comparison NAME --data-dir DIR --workdir DIR [--seeds 3,4,5]
  python research/finetune_sizes.py report --comparison NAME --workdir DIR
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, stdev

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "224"
# A small Lite0 job: 1,600 training and 400 validation images, then 1,000 test images.
JOB = ["models=efficientnet_lite0_finetuned", "train_size=2000", "test_size=1000", "head_epochs=5",
       "finetune_epochs=4"]
COST_BOUND = 1 / 3  # a default's stage-2 seconds, as a share of 224 px's at most
ACCURACY_MARGIN = 0.003  # how far below 224 px's mean validation accuracy a default may end, at most


@dataclass(frozen=True)
class Comparison:
    """One committed comparison: candidates by label (config overrides; BASELINE first), where it is recorded."""

    name: str
    candidates: dict[str, tuple[str, ...]]
    out: Path
    markers: tuple[str, str]  # its block of research/README.md


COMPARISONS = {c.name: c for c in (
    Comparison("train-size", {BASELINE: ("image_size=224", "finetune_image_size=224"),
                              "128": ("image_size=224", "finetune_image_size=128")},
               ROOT / "research" / "results" / "finetune_sizes.json", ("<!-- sizes:start -->", "<!-- sizes:end -->")),
    Comparison("throughout", {BASELINE: ("image_size=224", "finetune_image_size=224"),
                              "128 throughout": ("image_size=128", "finetune_image_size=128"),
                              "96 throughout": ("image_size=96", "finetune_image_size=96")},
               ROOT / "research" / "results" / "lite0_sides_throughout.json",
               ("<!-- throughout:start -->", "<!-- throughout:end -->")),
)}


def run_dir(workdir: Path, comparison: Comparison, label: str, seed: int | str) -> Path:
    """The folder of one (candidate, seed) run; `seed` "*" gives the pattern of all the candidate's seeds."""
    return workdir / comparison.name / f"{label.replace(' ', '-')}-seed{seed}"


def run(comparison: Comparison, data_dir: str, workdir: Path, seeds: list[int]) -> None:
    """Train every (seed, candidate) not finished yet, seed by seed so that each seed's candidates
    share the machine's load alike."""
    from cifar10_transfer.cache import FeatureCache
    from cifar10_transfer.config import make_config
    from cifar10_transfer.data import load_dataset
    from cifar10_transfer.runs import run_all
    from cifar10_transfer.stages import Run

    dataset, cache = load_dataset("cifar10", data_dir), FeatureCache(workdir / "cache")
    for seed in seeds:
        for label, overrides in comparison.candidates.items():
            config = make_config("seed", [*JOB, *overrides, f"seed={seed}"])
            run_all(Run(config, dataset, "imagenet", run_dir(workdir, comparison, label, seed), "seed", cache=cache,
                        save_models=False))


def rows(comparison: Comparison, workdir: Path) -> list[dict]:
    """One row per finished run: candidate, seed, sizes, stage-2 seconds and accuracies, machine."""
    found = []
    for label in comparison.candidates:
        pattern = run_dir(workdir, comparison, label, "*").relative_to(workdir)
        for path in sorted(workdir.glob(f"{pattern}/results/results.json")):
            results = json.loads(path.read_text())
            entry = results["models"]["efficientnet_lite0_finetuned"]
            found.append({"candidate": label, "seed": results["config"]["seed"],
                          "image_size": results["config"]["image_size"], "training_sizes": entry["training_sizes"],
                          "seconds": entry["seconds"], "val_accuracy": entry["val_accuracy"],
                          "test_accuracy": entry["test_accuracy"], "val_images": results["data"]["val"],
                          "commit": results["provenance"]["git_commit"][:7],
                          "hardware": results["provenance"]["hardware"],
                          "cpu_isa": results["provenance"].get("cpu_isa")})
    return found


def summary(comparison: Comparison, found: list[dict]) -> dict:
    """Per candidate: seeds, mean and sd of validation accuracy and seconds, and the standard error of
    the mean validation accuracy."""
    table = {}
    for label in comparison.candidates:
        runs = [row for row in found if row["candidate"] == label]
        if not runs:
            continue
        val = [row["val_accuracy"] for row in runs]
        sd = stdev(val) if len(val) > 1 else None
        table[label] = {"seeds": [row["seed"] for row in runs], "mean_val_accuracy": fmean(val), "sd_val_accuracy": sd,
                        "se_val_accuracy": sd / len(val) ** 0.5 if sd is not None else None,
                        "mean_seconds": fmean(row["seconds"] for row in runs),
                        "mean_test_accuracy": fmean(row["test_accuracy"] for row in runs)}
    return table


def decide(table: dict) -> dict:
    """The committed rule applied to `table` (see the module docstring)."""
    base = table[BASELINE]
    cheap = {label: t for label, t in table.items()
             if label != BASELINE and t["mean_seconds"] <= COST_BOUND * base["mean_seconds"]}
    if not cheap:
        return {"default": BASELINE, "why": "no candidate took a third of 224 px's stage-2 seconds or less"}
    best = max(cheap, key=lambda label: cheap[label]["mean_val_accuracy"])
    gap = cheap[best]["mean_val_accuracy"] - base["mean_val_accuracy"]
    if gap >= -ACCURACY_MARGIN:
        return {"default": best, "why": f"{best}: mean validation {100 * gap:+.2f} points against 224 px, "
                                        f"within the {100 * ACCURACY_MARGIN:.1f}-point margin"}
    return {"default": BASELINE, "why": f"{best}, the best candidate within the cost bound, ended "
                                        f"{100 * -gap:.2f} points below 224 px on validation, more than "
                                        f"{100 * ACCURACY_MARGIN:.1f}"}


def markdown(document: dict) -> str:
    """The block of research/README.md: each run, then each candidate's means and the decision."""
    runs = document["runs"]
    lines = ["| candidate | seed | evaluation side | sides per epoch | stage-2 seconds | val accuracy "
             "| test accuracy |", "|---|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {r['candidate']} | {r['seed']} | {r['image_size']} | {', '.join(map(str, r['training_sizes']))} | "
              f"{r['seconds']:,.0f} | {100 * r['val_accuracy']:.2f}% | {100 * r['test_accuracy']:.2f}% |"
              for r in sorted(runs, key=lambda r: (r["seed"], r["candidate"]))]
    lines += ["", "| candidate | seeds | mean val accuracy ± standard error | mean stage-2 seconds |",
              "|---|---:|---:|---:|"]
    for label, t in document["summary"].items():
        se = f" ± {100 * t['se_val_accuracy']:.2f}" if t["se_val_accuracy"] is not None else ""
        lines.append(f"| {label} | {len(t['seeds'])} | {100 * t['mean_val_accuracy']:.2f}%{se} | "
                     f"{t['mean_seconds']:,.0f} |")
    machines = sorted({f"{r['hardware']} ({', '.join(r['cpu_isa'] or ['extensions not recorded'])})" for r in runs})
    commits = sorted({r["commit"] for r in runs})
    lines += ["", f"Decision: {document['decision']['default'] or 'none yet'} ({document['decision']['why']}). "
              f"Runs on {'; '.join(machines)}, results written at commit(s) {', '.join(commits)}; "
              f"{runs[0]['val_images'] if runs else 0} validation images each."]
    return "\n".join(lines)


def report(comparison: Comparison, workdir: Path) -> dict:
    """Apply the rule to the finished runs and record the comparison's JSON and README block."""
    found = rows(comparison, workdir)
    table = summary(comparison, found)
    complete = all(len(table.get(label, {}).get("seeds", [])) >= 3 for label in comparison.candidates)
    decision = decide(table) if complete else {"default": None, "why": "fewer than 3 seeds of some candidate"}
    document = {"job": JOB, "candidates": {k: list(v) for k, v in comparison.candidates.items()},
                "rule": {"cost_bound": COST_BOUND, "accuracy_margin": ACCURACY_MARGIN}, "runs": found,
                "summary": table, "decision": decision}
    from lab_records import record

    record(document, comparison.out, comparison.markers, markdown(document))
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--comparison", choices=sorted(COMPARISONS), required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--seeds", default="3,4,5")
    args = parser.parse_args()
    comparison = COMPARISONS[args.comparison]
    if args.command == "run":
        run(comparison, args.data_dir, args.workdir, [int(seed) for seed in args.seeds.split(",")])
    document = report(comparison, args.workdir)
    print(json.dumps({"summary": document["summary"], "decision": document["decision"]}, indent=2))


if __name__ == "__main__":
    main()
