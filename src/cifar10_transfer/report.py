"""The README's results and curves blocks and the sentences the deck shares, computed from the results files."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from .curve_report import curve_findings, curve_tables_markdown, run_times, seed_spread
from .errors import UserError
from .figures import FIGURES
from .plots import format_accuracy
from .publish import atomic_write
from .registry import get_backbone, parse_stage
from .results import (best_model, difference_interval, predictions_words, single_view_key,
                      single_view_test_accuracy, stage_seconds, training_seconds)
from .study import label, stage, table_stages

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
CURVES_START, CURVES_END = "<!-- curves:start -->", "<!-- curves:end -->"


def curves_block(curves: dict) -> str:
    """What the README shows between its curves markers: both figures, the computed findings and the tables."""
    prov = curves["provenance"]
    lines = [line for name in ("learning_curve", "resolution_cost") for line in (FIGURES[name].markdown(), "")]
    lines += [f"- {_md_escape(line)}" for line in curve_findings(curves)]
    lines += ["", curve_tables_markdown(curves)]
    details = [f"profile {curves.get('profile', 'unknown')}", f"data: {prov.get('data', 'unknown')}",
               f"weights: {prov.get('weights', 'unknown')}", f"hardware: {prov.get('hardware', 'unknown')}",
               run_times(curves),
               f"finished {finished_date(prov)}", f"commit {short_commit(prov)}"]
    return "\n".join(lines) + "\n\n*" + _md_escape(" · ".join(details)) + "*"


def points_difference(accuracy: float, reference: float) -> float:
    # Difference of the displayed one-decimal percentages, so readers can check it; + 0.0 turns -0.0 into 0.0.
    return round(round(100 * accuracy, 1) - round(100 * reference, 1), 1) + 0.0


def not_run_reason(results: dict, name: str) -> str:
    return results.get("not_run", {}).get(name, "not selected")


def stage_label(results: dict, name: str) -> str:
    """A stage's label, marked when its backbone ran from random initialisation."""
    text = label(name)
    if stage(name).backbone and results["provenance"].get("weights") == "none":
        text += " (random init, not transfer learning)"
    return text


def run_seed_spread(results: dict, curves: dict | None) -> dict:
    """(mean, std, seeds) per stage from the learning curves at this run's training-set size, for
    the stages that this run did not train under several seeds itself (one seed has no spread)."""
    spread = {} if curves is None else seed_spread(curves, results["config"].get("train_size"))
    return {name: found for name, found in spread.items()
            if found[2] > 1 and "runs" not in results["models"].get(name, {})}


def over_seeds_cell(entry: dict) -> str:
    """A stage trained under several seeds: its mean single-view test accuracy ± the sample standard
    deviation (points), the 95% confidence interval of the mean and the number of seeds."""
    spread = entry["over_seeds"][single_view_key(entry)]
    low, high = (100 * bound for bound in spread["ci95"])
    return (f"{format_accuracy(spread['mean'])} ± {100 * spread['sd']:.1f} "
            f"(95% CI {low:.1f}–{high:.1f}, {spread['n']} seeds)")


def table_rows(results: dict, curves: dict | None = None) -> list[dict]:
    """One row per stage (the study's, then the others trained), as display strings shared by
    the README and the deck. Accuracies are single views, as the study's; under `test_time_flip`
    the mirror-averaged one is its own cell ("mirror"). With notebook 03's `curves`, stages it ran
    at this run's size also show their mean ± standard deviation over the curves' seeds (marked where
    the curves mirrored). Stages
    this run trained under several seeds show their own (`over_seeds_cell`); the others say "1 seed"."""
    rows, spread = [], run_seed_spread(results, curves)
    views = ", with the mirror" if curves and curves.get("config", {}).get("test_time_flip") else ""
    for entry in table_stages(results["models"]):
        m, study = results["models"].get(entry.name), entry.study_accuracy
        mean, std, seeds = spread.get(entry.name, (None, None, 1))
        rows.append({"model": stage_label(results, entry.name),
                     "study": format_accuracy(study) if study is not None else "—",
                     "run": (format_accuracy(single_view_test_accuracy(m)) if m
                             else f"not run: {not_run_reason(results, entry.name)}"),
                     "seeds": over_seeds_cell(m) if m and "runs" in m
                     else f"{format_accuracy(mean)} ± {100 * std:.1f} ({seeds} seeds{views})" if mean is not None
                     else ("1 seed" if m else "—"),
                     "diff": (f"{points_difference(single_view_test_accuracy(m), study):+.1f}"
                              if m and study is not None else "—"),
                     "mirror": format_accuracy(m["test_accuracy"]) if m and "test_time_flip" in m else "—",
                     "seconds": _seconds_cell(results["models"], entry.name) if m else "—"})
    return rows


def _seconds_cell(models: dict, name: str) -> str:
    """A stage's training seconds; a fine-tuned stage's as stage 2 + its head's, which it starts from."""
    seconds, both = stage_seconds(models[name]), training_seconds(models, name)
    return f"{seconds:,.0f} + {both - seconds:,.0f}" if both != seconds else f"{seconds:,.0f}"


def weights_description(results: dict) -> str:
    """The run's weights setting and, for ImageNet weights, where each trained backbone's came from."""
    weights = results["provenance"].get("weights", "unknown")
    sources = {m["backbone"]: _weights_source(m) for m in results["models"].values() if "weights_source" in m}
    if weights == "imagenet" and sources:
        return "imagenet (" + "; ".join(f"{get_backbone(b).label}: {src}" for b, src in sources.items()) + ")"
    return str(weights)


def _weights_source(entry: dict) -> str:
    """Where a stage's backbone weights came from, with the package's version and the file's sha256 where recorded."""
    package = f" {entry['weights_package'].rpartition('==')[2]}" if entry.get("weights_package") else ""  # its version
    digest = (f", {entry['weights_file']} sha256 {entry['weights_sha256'][:12]}…"
              if entry.get("weights_sha256") else "")
    return entry["weights_source"] + package + digest


def finished_date(provenance: dict) -> str:
    stamp = provenance.get("finished", "")
    try:
        return datetime.fromisoformat(stamp).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return stamp or "unknown date"


def short_commit(provenance: dict) -> str:
    commit = (provenance.get("git_commit") or "unknown")[:7]
    return commit + ("-dirty" if provenance.get("git_dirty") else "")


def _md_escape(text: str) -> str:
    # Paths and reasons may hold characters that Markdown would read as markup or cell breaks.
    return "".join("\\" + c if c in "\\`*_[]|<>" else c for c in str(text))


def views_description(results: dict) -> str:
    """How the run's test (and final validation) predictions were made."""
    if results["config"].get("test_time_flip"):
        return "test-time flip: each image's probabilities averaged with its mirror image's"
    return "single view per test image"


def results_table_markdown(results: dict, curves: dict | None = None) -> str:
    """The README results table (study vs this run) followed by one italic provenance line."""
    rows, mirrored = table_rows(results, curves), bool(results["config"].get("test_time_flip"))
    mirror = (" With mirror |", "---:|") if mirrored else ("", "")
    lines = ["| Model | Study (reported) | This run (single view) | Over seeds (mean ± sd) "
             f"| Difference (points) |{mirror[0]} Training seconds, mean over seeds (fine-tuned: stage 2 + head) |",
             f"|---|---:|---:|---:|---:|{mirror[1]}---:|"]
    lines += [f"| {r['model']} | {r['study']} | {_md_escape(r['run'])} | {r['seeds']} | {r['diff']} |"
              + (f" {r['mirror']} |" if mirrored else "") + f" {r['seconds']} |" for r in rows]
    prov = results["provenance"]
    details = [f"profile {results.get('profile', 'unknown')}", f"data: {prov.get('data', 'unknown')}",
               f"weights: {weights_description(results)}", views_description(results),
               f"hardware: {prov.get('hardware', 'unknown')}", f"finished {finished_date(prov)}",
               f"commit {short_commit(prov)}"]
    return "\n".join(lines) + "\n\n*" + _md_escape(" · ".join(details)) + "*"


def readme_block(results: dict, curves: dict | None = None) -> str:
    """What the README shows between its results markers: the table, then the computed findings."""
    return (results_table_markdown(results, curves) + "\n\n"
            + "\n".join(f"- {_md_escape(line)}" for line in findings(results)))


def _marked_block(text: str, start_marker: str = README_START, end_marker: str = README_END) -> tuple[int, int] | None:
    start = text.find(start_marker)
    end = text.find(end_marker, start + len(start_marker)) if start >= 0 else -1
    return (start + len(start_marker), end) if end >= 0 else None


def update_readme(readme_path: str | os.PathLike, results: dict, curves: dict | None = None) -> None:
    """Replace the README's results block (table and findings) and, given curves, its curves block."""
    path = Path(readme_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: create it with the lines {README_START} and {README_END}.") from None
    blocks = [(README_START, README_END, readme_block(results, curves))]
    if curves is not None:
        blocks.append((CURVES_START, CURVES_END, curves_block(curves)))
    replace_marked_blocks(path, text, blocks)


def replace_marked_blocks(path: Path, text: str, blocks: list[tuple[str, str, str]]) -> None:
    """Write `text` to `path` (atomically) with the lines between each (start marker, end
    marker) pair replaced by its content; UserError naming the markers when a pair is missing."""
    for start_marker, end_marker, content in blocks:
        block = _marked_block(text, start_marker, end_marker)
        if block is None:
            raise UserError(f"{path} lacks the lines {start_marker} and {end_marker} (in that order): "
                            f"add them where that block belongs.")
        text = text[: block[0]] + "\n" + content + "\n" + text[block[1]:]
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def readme_table_matches(readme_text: str, results: dict, curves: dict | None = None) -> bool:
    """Whether the README's results block holds exactly what these results (and curves) render to."""
    block = _marked_block(readme_text)
    return block is not None and readme_text[block[0]: block[1]].strip() == readme_block(results, curves)


def readme_curves_match(readme_text: str, curves: dict) -> bool:
    """Whether the README's curves block holds exactly what these curves render to."""
    block = _marked_block(readme_text, CURVES_START, CURVES_END)
    return block is not None and readme_text[block[0]: block[1]].strip() == curves_block(curves)


def _flip_findings(results: dict) -> list[str]:
    """Under `test_time_flip`: what the mirror view changed, per stage, on validation and test."""
    flips = {name: m["test_time_flip"] for name, m in results["models"].items() if "test_time_flip" in m}
    if not flips:
        return []
    views = "; ".join(
        f"{stage_label(results, name)}: {format_accuracy(flip['single_view_val_accuracy'])} → "
        f"{format_accuracy(flip['val_accuracy'])} | {format_accuracy(flip['single_view_test_accuracy'])} → "
        f"{format_accuracy(results['models'][name]['test_accuracy'])}" for name, flip in flips.items())
    return ["Accuracies and differences here are single views, as the study's; this run also averaged each "
            "image's class probabilities with its mirror image's (test-time flip).",
            f"One view → with the mirror, validation | test: {views}."]


def _gain(results: dict, entry: dict, reference: dict) -> str:
    """`entry`'s single-view test accuracy minus `reference`'s, in points, with its 95% interval and what
    the interval covers: the test set's error, and the spread over seeds where the stages ran under seeds."""
    gain, low, high = (100 * x for x in difference_interval(entry, reference, results["data"]["test"], True))
    covers = "seeds and test-set error" if "runs" in entry or "runs" in reference else "test-set error only, one seed"
    return (f"{gain:+.1f} points ({format_accuracy(single_view_test_accuracy(entry))} vs "
            f"{format_accuracy(single_view_test_accuracy(reference))}; 95% interval {low:+.1f} to {high:+.1f}, "
            f"{covers})")


def _accuracy_views(entry: dict) -> str:
    """A stage's test accuracy as a single view, and mirror-averaged beside it where the run did both."""
    single = format_accuracy(single_view_test_accuracy(entry))
    if "test_time_flip" not in entry:
        return single
    return f"{single} single-view ({format_accuracy(entry['test_accuracy'])} with the mirror)"


BASELINES = {"cnn": "the baseline CNN", "scratch": "the ResNet from scratch"}  # the stages trained from scratch


def findings(results: dict) -> list[str]:
    """Sentences computed from results: best model, what each other stage (transfer, the ResNet from
    scratch) adds over the CNN and each transfer stage over the ResNet from scratch, at what cost, what
    test-time flip changed, each stage against the study, the top confusion and the weakest class."""
    models, best = results["models"], best_model(results)
    if best is None:
        return ["No model finished in this run, so there is nothing to compare yet."]
    runs = models[best].get("runs")
    over = f" (the mean of {len(runs)} seeds)" if runs else ""
    out = [f"Best model: {label(best)} with {_accuracy_views(models[best])} test accuracy{over}."]
    if str(results["provenance"].get("weights")) == "none" and any(stage(n).backbone for n in models):
        out.append("The backbones ran from random initialisation (weights none): not transfer learning, "
                   "so their rows only show that the pipeline runs.")
    if len(models) == 1:
        out.append(f"Only the {label(best)} ran, so this run cannot compare models.")
    # Every other stage against the study's CNN, then each transfer stage against the strong baseline.
    for reference, words in BASELINES.items():
        base = models.get(reference)
        for name in (n for n in models if base and n not in ("cnn", reference)):
            m, seconds = models[name], training_seconds(models, name)  # stage 2's includes its head's
            both = name.endswith("_finetuned") and name.replace("_finetuned", "_head") in models
            stages = " (both stages)" if both else ""
            base_seconds = stage_seconds(base)
            ratio = seconds / max(base_seconds, 1e-9)
            times = f"{ratio:,.0f}x" if ratio >= 1 else f"{ratio:.2g}x"  # a head can cost less than the ResNet
            out.append(f"{stage_label(results, name)} vs {words}: {_gain(results, m, base)}, "
                       f"for {seconds:,.0f} s of training{stages} against {base_seconds:,.0f} s ({times}).")
    for name, head in ((n, n.replace("_finetuned", "_head")) for n in models if parse_stage(n)[1] == "finetuned"):
        if head in models:
            out.append(f"{label(name)} vs its head: {_gain(results, models[name], models[head])}.")
    out += _flip_findings(results)
    for name in (n for n in models if stage(n).study_accuracy is not None):
        reported = stage(name).study_accuracy
        single = single_view_test_accuracy(models[name])
        out.append(f"{label(name)}: {format_accuracy(single)} here vs {format_accuracy(reported)} in the study "
                   f"({points_difference(single, reported):+.1f} points), both single views.")
    if runs:  # one model's details: those of the run shown
        out.append(f"The mistakes and classes below are those of {label(best)}'s run with the median "
                   f"validation accuracy (seed {models[best]['shown_seed']}).")
    confusions = models[best].get("top_confusions") or []
    per_class, views = models[best].get("per_class") or {}, predictions_words(models[best])
    views = f", {views}" if views else ""
    if confusions:
        top = confusions[0]
        support = per_class.get(top["true"], {}).get("support")
        share = f" ({100 * top['count'] / support:.1f}% of {support:,} test {top['true']} images)" if support else ""
        out.append(f"Most common mistake ({label(best)}{views}): {top['true']} predicted as {top['predicted']}, "
                   f"{top['count']:,} times{share}.")
    if per_class:
        weakest = min(per_class, key=lambda c: per_class[c]["f1"])
        m = per_class[weakest]
        out.append(f"Weakest class ({label(best)}{views}): {weakest} (F1 {m['f1']:.2f}, "
                   f"precision {m['precision']:.2f}, recall {m['recall']:.2f}).")
    return out
