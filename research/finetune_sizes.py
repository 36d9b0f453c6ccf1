"""Stage 2's training size for EfficientNet-Lite0 compared on validation: 224 px (the evaluation size)
against cheaper sizes, at three seeds each, in one process on one machine.

The rule, committed before the runs it judges finished (research/README.md, "Stage 2's training
size"): a candidate may become the default only if its mean stage-2 seconds are at most a third
of 224 px's in this run. Among those, the one with the highest mean validation accuracy (single
view) becomes the default if that mean is no more than 0.3 points below 224 px's; otherwise
224 px stays. Test accuracy is recorded for the record, never read by the rule.

Each (seed, candidate) is an ordinary `stages.Run` with `run_all`, sharing one feature cache per
machine, so a rerun (`python research/finetune_sizes.py run ...` again) loads every finished stage
and only trains what is missing. `report` reads the runs' results.json files, applies the rule
and writes research/results/finetune_sizes.json.

Usage:
  python research/finetune_sizes.py run --data-dir DIR --workdir DIR [--seeds 3,4,5]
  python research/finetune_sizes.py report --workdir DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import fmean, stdev

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "research" / "results" / "finetune_sizes.json"
BASELINE = "224"
CANDIDATES = (BASELINE, "128")  # finetune_image_size values (see research/README.md for 128-224)
# A small Lite0 job at the evaluation size of the study: 1,600 training and 400 validation images.
JOB = ["models=efficientnet_lite0_finetuned", "image_size=224", "train_size=2000", "test_size=1000",
       "head_epochs=5", "finetune_epochs=4"]
COST_BOUND = 1 / 3  # a default's stage-2 seconds, as a share of 224 px's at most
START, END = "<!-- sizes:start -->", "<!-- sizes:end -->"  # the block of research/README.md
ACCURACY_MARGIN = 0.003  # how far below 224 px's mean validation accuracy a default may end, at most


def run(data_dir: str, workdir: Path, seeds: list[int]) -> None:
    """Train every (seed, candidate) not finished yet, seed by seed so that each seed's candidates
    share the machine's load alike."""
    from cifar10_transfer.cache import FeatureCache
    from cifar10_transfer.config import make_config
    from cifar10_transfer.data import load_dataset
    from cifar10_transfer.runs import run_all
    from cifar10_transfer.stages import Run

    dataset, cache = load_dataset("cifar10", data_dir), FeatureCache(workdir / "cache")
    for seed in seeds:
        for size in CANDIDATES:
            config = make_config("seed", [*JOB, f"seed={seed}", f"finetune_image_size={size}"])
            run_all(Run(config, dataset, "imagenet", workdir / f"size{size}-seed{seed}", "seed", cache=cache,
                        save_models=False))


def rows(workdir: Path) -> list[dict]:
    """One row per finished run: candidate, seed, stage-2 seconds and accuracies, machine."""
    found = []
    for path in sorted(workdir.glob("size*-seed*/results/results.json")):
        results = json.loads(path.read_text())
        entry = results["models"]["efficientnet_lite0_finetuned"]
        found.append({"finetune_image_size": str(entry["stage2"]["image_size"]), "seed": results["config"]["seed"],
                      "training_sizes": entry["training_sizes"], "seconds": entry["seconds"],
                      "val_accuracy": entry["val_accuracy"], "test_accuracy": entry["test_accuracy"],
                      "val_images": results["data"]["val"], "commit": results["provenance"]["git_commit"][:7],
                      "hardware": results["provenance"]["hardware"]})
    return found


def summary(found: list[dict]) -> dict:
    """Per candidate: seeds, mean and sd of validation accuracy and seconds, and the standard error of
    the mean validation accuracy."""
    table = {}
    for size in CANDIDATES:
        runs = [row for row in found if row["finetune_image_size"] == size]
        if not runs:
            continue
        val = [row["val_accuracy"] for row in runs]
        sd = stdev(val) if len(val) > 1 else None
        table[size] = {"seeds": [row["seed"] for row in runs], "mean_val_accuracy": fmean(val), "sd_val_accuracy": sd,
                       "se_val_accuracy": sd / len(val) ** 0.5 if sd is not None else None,
                       "mean_seconds": fmean(row["seconds"] for row in runs),
                       "mean_test_accuracy": fmean(row["test_accuracy"] for row in runs)}
    return table


def decide(table: dict) -> dict:
    """The committed rule applied to `table` (see the module docstring)."""
    base = table[BASELINE]
    cheap = {size: t for size, t in table.items()
             if size != BASELINE and t["mean_seconds"] <= COST_BOUND * base["mean_seconds"]}
    if not cheap:
        return {"default": BASELINE, "why": "no candidate took a third of 224 px's stage-2 seconds or less"}
    best = max(cheap, key=lambda size: cheap[size]["mean_val_accuracy"])
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
    lines = ["| finetune_image_size | seed | sides per epoch | stage-2 seconds | val accuracy | test accuracy |",
             "|---|---:|---|---:|---:|---:|"]
    lines += [f"| {r['finetune_image_size']} | {r['seed']} | {', '.join(map(str, r['training_sizes']))} | "
              f"{r['seconds']:,.0f} | {100 * r['val_accuracy']:.2f}% | {100 * r['test_accuracy']:.2f}% |"
              for r in sorted(runs, key=lambda r: (r["seed"], r["finetune_image_size"]))]
    lines += ["", "| finetune_image_size | seeds | mean val accuracy ± standard error | mean stage-2 seconds |",
              "|---|---:|---:|---:|"]
    for size, t in document["summary"].items():
        se = f" ± {100 * t['se_val_accuracy']:.2f}" if t["se_val_accuracy"] is not None else ""
        lines.append(f"| {size} | {len(t['seeds'])} | {100 * t['mean_val_accuracy']:.2f}%{se} | "
                     f"{t['mean_seconds']:,.0f} |")
    machines = sorted({r["hardware"] for r in runs})
    commits = sorted({r["commit"] for r in runs})
    lines += ["", f"Decision: {document['decision']['default'] or 'none yet'} ({document['decision']['why']}). "
              f"Runs on {'; '.join(machines)}, results written at commit(s) {', '.join(commits)}; "
              f"{runs[0]['val_images'] if runs else 0} validation images each."]
    return "\n".join(lines)


def report(workdir: Path) -> dict:
    """Apply the rule to the finished runs and write research/results/finetune_sizes.json."""
    found = rows(workdir)
    table = summary(found)
    complete = all(len(table.get(size, {}).get("seeds", [])) >= 3 for size in CANDIDATES)
    decision = decide(table) if complete else {"default": None, "why": "fewer than 3 seeds of some candidate"}
    document = {"job": JOB, "candidates": list(CANDIDATES), "rule": {"cost_bound": COST_BOUND,
                "accuracy_margin": ACCURACY_MARGIN}, "runs": found, "summary": table, "decision": decision}
    from lab_records import record

    record(document, OUT, (START, END), markdown(document))
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--seeds", default="3,4,5")
    args = parser.parse_args()
    if args.command == "run":
        run(args.data_dir, args.workdir, [int(seed) for seed in args.seeds.split(",")])
    document = report(args.workdir)
    print(json.dumps({"summary": document["summary"], "decision": document["decision"]}, indent=2))


if __name__ == "__main__":
    main()
