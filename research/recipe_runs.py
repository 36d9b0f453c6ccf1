"""Stage 2 recipes of one backbone compared across full seed-profile runs, on validation.

Each argument is a run's results.json: a path, or `COMMIT` for the results/results.json
committed there (`git show COMMIT:results/results.json`). The script keeps each run's
`<backbone>_finetuned` entry (recipe, final and best validation accuracy, test accuracy,
seconds, commit), writes them to research/results/finetune_recipes.json and renders the block
of research/README.md between the `recipes` markers. A recipe is chosen on validation accuracy
only; test accuracy is listed so that every run's outcome is on record. Where some recipes ran at
more than one seed, a second table lists their final validation and test accuracy per seed, and
the recipe (with its evaluation, single view or mirror-averaged) with the highest mean validation
accuracy over the most seeds is chosen; one seed's validation split is too small to tell the
leading recipes apart.

Usage: python research/recipe_runs.py [--backbone efficientnet_lite0] RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from statistics import fmean

from cifar10_transfer.recipe import CONFIG_KEYS, Stage2Recipe, depth_words
from cifar10_transfer.registry import get_backbone
from lab_records import record

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "research" / "results" / "finetune_recipes.json"
START, END = "<!-- recipes:start -->", "<!-- recipes:end -->"
SINGLE, MIRROR = "single view", "mirror-averaged"  # a row's evaluation


def load_run(run: str) -> dict:
    """A results.json by path, or the one committed at `run` when no such file exists."""
    path = Path(run)
    if path.is_file():
        return json.loads(path.read_text())
    shown = subprocess.run(["git", "show", f"{run}:results/results.json"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"error: {run} is neither a results.json nor a commit that holds results/results.json.")
    return json.loads(shown.stdout)


def recipe_row(results: dict, backbone: str) -> dict:
    """One run's stage 2: its recipe and what it reached. A run evaluated with `test_time_flip`
    reports its mirror-averaged final validation and test accuracy; its per-epoch validation
    was single-view, so it has no best-epoch figure. The recipe is keyed as in the run config
    (`finetune_layers`, ...), old results and new alike."""
    entry = results["models"][f"{backbone}_finetuned"]
    flip = entry.get("test_time_flip")
    recipe = Stage2Recipe.from_entry(entry).to_dict()
    return {"commit": results["provenance"]["git_commit"][:7], "finished": results["provenance"]["finished"],
            **{CONFIG_KEYS[field]: value for field, value in recipe.items()}, "epochs": entry["epochs"],
            "test_time_flip": bool(flip), "val_images": results["data"]["val"], "seed": results["config"]["seed"],
            "val_accuracy": flip["val_accuracy"] if flip else entry["val_accuracy"],
            "best_val_accuracy": None if flip else max(entry["history"]["val_accuracy"]),
            "test_accuracy": entry["test_accuracy"], "seconds": entry["seconds"],
            "single_view_val_accuracy": flip["single_view_val_accuracy"] if flip else entry["val_accuracy"],
            "single_view_test_accuracy": flip["single_view_test_accuracy"] if flip else entry["test_accuracy"],
            "data": results["provenance"]["data"], "weights": results["provenance"]["weights"],
            "hardware": results["provenance"]["hardware"]}


def recipe_words(spec, row: dict, name_epochs: bool) -> str:
    """A row's stage 2 recipe in words: depth, learning rate, schedule, epochs where asked, clauses."""
    epoch_words = f", {row['epochs']} epochs" if name_epochs else ""
    return (f"{depth_words(row['finetune_layers'], spec)}, {row['finetune_lr']:g}, "
            f"{row['finetune_schedule']}{epoch_words}{clauses(row)}")


def clauses(row: dict) -> str:
    """A row's label smoothing, BatchNorm and stochastic depth: a clause each where they differ from
    the plain recipe."""
    smoothing, drop_path = row["finetune_label_smoothing"], row["finetune_drop_path"]
    return (f", label smoothing {smoothing:g}" if smoothing else "") \
        + (", BatchNorm trained" if row["finetune_batchnorm"] == "train" else "") \
        + (f", stochastic depth {drop_path:g}" if drop_path else "")


def seed_groups(rows: list[dict], spec) -> dict:
    """(recipe words, evaluation) -> {seed: (final val accuracy, test accuracy)}, for the recipes
    that ran at more than one seed. A test-time flip run counts twice: its single views (which
    equal a run of the same recipe without the flip) and its mirror-averaged views."""
    groups: dict = {}
    for row in rows:
        views = [(SINGLE, row["single_view_val_accuracy"], row["single_view_test_accuracy"])]
        if row["test_time_flip"]:
            views.append((MIRROR, row["val_accuracy"], row["test_accuracy"]))
        for evaluation, val, test in views:
            groups.setdefault((recipe_words(spec, row, True), evaluation), {}).setdefault(row["seed"], (val, test))
    return {key: seeds for key, seeds in groups.items() if len(seeds) > 1}


def mean_accuracy(runs: dict, index: int = 0) -> float:
    """Mean over seeds of a seed group's validation (index 0) or test (index 1) accuracy."""
    return fmean(run[index] for run in runs.values())


def leading_groups(groups: dict) -> list[tuple]:
    """The (recipe, evaluation) keys run at the most seeds, by mean validation accuracy, best last."""
    most = max(len(runs) for runs in groups.values())
    return sorted((key for key, runs in groups.items() if len(runs) == most),
                  key=lambda key: mean_accuracy(groups[key]))


def chosen_across_seeds(groups: dict) -> tuple:
    """The (recipe, evaluation) with the highest mean validation accuracy among those run at the most seeds."""
    return leading_groups(groups)[-1]


def evaluation(row: dict) -> str:
    """How a row's reported accuracies were evaluated."""
    return MIRROR if row["test_time_flip"] else SINGLE


def best_row(rows: list[dict]) -> dict:
    """The run with the highest final validation accuracy."""
    return max(rows, key=lambda row: row["val_accuracy"])


def chosen_recipe(rows: list[dict], spec) -> tuple:
    """(recipe words, evaluation) chosen on validation: across seeds where some recipes ran at
    more than one, else the run with the highest final validation accuracy."""
    groups = seed_groups(rows, spec)
    if groups:
        return chosen_across_seeds(groups)
    best = best_row(rows)
    return recipe_words(spec, best, True), evaluation(best)


def seed_markdown(groups: dict) -> str:
    """The second table: final validation and test accuracy per seed and their means, the choice marked."""
    chosen, seeds = chosen_across_seeds(groups), sorted({seed for runs in groups.values() for seed in runs})
    per_seed = " / ".join(f"seed {seed}" for seed in seeds)
    lines = [f"| recipe run at more than one seed | evaluation | val accuracy ({per_seed} / mean) "
             f"| test accuracy ({per_seed} / mean) |", "|---|---|---|---|"]
    for key, runs in groups.items():
        cells = []
        for index in (0, 1):
            values = [f"{100 * runs[seed][index]:.2f}%" if seed in runs else "—" for seed in seeds]
            cells.append(" / ".join(values) + f" / **{100 * mean_accuracy(runs, index):.2f}%**")
        lines.append(f"| {key[0]}{' (chosen)' if key == chosen else ''} | {key[1]} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def seed_choice_words(groups: dict, n_val: int) -> str:
    """The note's account of the choice across seeds: the rule, the chosen recipe's lead over the
    next (run at as many seeds) by mean validation accuracy, and the standard error of such a mean."""
    leading = leading_groups(groups)
    means, most = [mean_accuracy(groups[key]) for key in leading], len(groups[leading[-1]])
    standard_error = 100 * (means[-1] * (1 - means[-1]) / n_val / most) ** 0.5
    words = ("Each run is one seed; the recipes run at more than one seed are compared in the second table, "
             "and the one with the highest mean final validation accuracy over the most seeds is chosen")
    if len(means) == 1:
        return words + ". "
    lead = 100 * (means[-1] - means[-2])
    verdict = "so the choice follows the rule, not a measured difference" if lead < standard_error else (
        "a lead larger than that")
    images = lead / (100 / n_val)
    return (words + f": it leads the next by {lead:.3f} points ({round(images, 1):g} validation images per seed), "
            f"against a standard error of {standard_error:.1f} points for a {most}-seed mean, {verdict}. ")


def markdown(report: dict) -> str:
    """The tables: one row per run, then the recipes run at more than one seed; the recipe
    chosen by (mean) final validation accuracy marked."""
    rows, spec = report["runs"], get_backbone(report["backbone"])
    groups = seed_groups(rows, spec)
    top = best_row(rows)
    chosen = None if groups else top
    machines = sorted({row["hardware"] for row in rows})
    epochs = sorted({row["epochs"] for row in rows})
    seeds = sorted({row["seed"] for row in rows})
    seed_header = " seed |" if len(seeds) > 1 else ""
    lines = [f"| {spec.label} stage 2 recipe |{seed_header} val accuracy (final / best epoch) "
             "| test accuracy | stage 2 seconds | run |", "|---|" + "---|" * (len(seeds) > 1) + "---|---|---|---|"]
    for row in rows:
        flip = ", test-time flip" if row["test_time_flip"] else ""
        best = "—" if row["best_val_accuracy"] is None else f"{100 * row['best_val_accuracy']:.1f}%"
        mark = " (chosen)" if row is chosen else ""
        seed_cell = f" {row['seed']} |" if len(seeds) > 1 else ""
        lines.append(f"| {recipe_words(spec, row, len(epochs) > 1)}{flip}{mark} |{seed_cell} "
                     f"{100 * row['val_accuracy']:.1f}% / {best} "
                     f"| {100 * row['test_accuracy']:.1f}% | {row['seconds']:,.0f} | commit {row['commit']}, "
                     f"{row['finished'][:10]}{', ' + row['hardware'] if len(machines) > 1 else ''} |")
    data = sorted({row["data"] for row in rows})
    jpeg = (" (a JPEG re-encoding whose effect on accuracy is not measured here)" if any("JPEG" in d for d in data)
            else "")
    weights = sorted({row["weights"] for row in rows})
    n_val = min(row["val_images"] for row in rows)
    standard_error = 100 * (top["val_accuracy"] * (1 - top["val_accuracy"]) / n_val) ** 0.5
    stage_epochs = f"10+10+{epochs[0]} epochs" if len(epochs) == 1 else "10+10 epochs, then stage 2's as named"
    choice = "Chosen on final validation accuracy. " if chosen else seed_choice_words(groups, n_val)
    note = (f"*Seed profile (10,000 images, 80/20 split, 224 px, {stage_epochs}), {' / '.join(data)}{jpeg}, "
            f"weights: {' / '.join(weights)}, {' / '.join(machines)}"
            f"{' (seconds compare only rows on the same machine)' if len(machines) > 1 else ''}. "
            + choice
            + ("Test-time flip rows average each validation and test image's probabilities with its mirror "
               "image's; their epochs were validated on single views, so they have no best-epoch figure. "
               if any(row["test_time_flip"] for row in rows) else "") +
            f"Validation holds {n_val:,} images: one image is {100 / n_val:.2f} points, and the binomial "
            f"standard error near the {'chosen' if chosen else 'best'} row's accuracy is {standard_error:.1f} "
            "points, so rows closer than that are not told apart by it.*")
    return "\n".join(lines) + ("\n\n" + seed_markdown(groups) if groups else "") + "\n\n" + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("runs", nargs="+", help="results.json paths or commits that hold results/results.json")
    args = parser.parse_args()
    report = {"backbone": args.backbone, "runs": [recipe_row(load_run(run), args.backbone) for run in args.runs]}
    block = markdown(report)
    record(report, OUT, (START, END), block)
    print(block)


if __name__ == "__main__":
    main()
