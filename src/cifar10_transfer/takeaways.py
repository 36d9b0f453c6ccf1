"""The deck's takeaway lines: one sentence per slide, computed from the results files alone."""

from __future__ import annotations

from .curve_report import gap_findings, lead_findings, resolution_findings
from .plots import format_accuracy
from .recipe import Stage2Recipe, depth_words
from .registry import parse_stage
from .report import BASELINES, findings, points_difference, short_commit
from .results import (best_model, difference_interval, single_view_test_accuracy, stage_seconds,
                      training_seconds, validation_spreads)
from .study import STUDY_STAGES, label, stage


def _gain(results: dict, name: str, reference: str) -> str:
    """Stage `name`'s single-view test accuracy over `reference`'s: "+29.8 points (95% interval ...)"."""
    models = results["models"]
    gain, low, high = (100 * x for x in difference_interval(models[name], models[reference],
                                                             results["data"]["test"], True))
    return f"{gain:+.1f} points (95% interval {low:+.1f} to {high:+.1f})"


def _best_transfer(results: dict) -> str | None:
    """The transfer stage with the highest mean validation accuracy, if any ran."""
    transfer = {n: m for n, m in results["models"].items() if parse_stage(n)[0] is not None}
    return best_model({**results, "models": transfer}) if transfer else None


def title(results: dict, **_) -> str | None:
    """The best transfer stage against each baseline that ran: the strong one first, as it is the fair one."""
    best = _best_transfer(results)
    baselines = [(n, words) for n, words in reversed(BASELINES.items()) if n in results["models"]]
    if best is None or not baselines:
        return None
    against = [f"vs {words}: {_gain(results, best, n)}" for n, words in baselines]
    return f"ImageNet pre-training, {label(best)}: {'; '.join(against)}; single views."


def problem(results: dict, **_) -> str:
    cnn, *transfer = STUDY_STAGES
    gains = ", ".join(f"{points_difference(stage(n).study_accuracy, stage(cnn).study_accuracy):+.1f} "
                      f"{label(n).split(' ', 1)[1]}" for n in transfer)
    models = results["models"]
    ours = [n for n in models if parse_stage(n)[0] is not None and "cnn" in models]
    backbones = {}  # backbone label: its stages' gains, e.g. "EfficientNet-Lite0": "+20.2 head-only, +31.0 fine-tuned"
    for n in ours:
        backbone, kind = label(n).split(" ", 1)
        gain = 100 * difference_interval(models[n], models["cnn"], results["data"]["test"], True)[0]
        backbones.setdefault(backbone, []).append(f"{gain:+.1f} {kind}")
    here = "; ".join(f"{backbone} {', '.join(gains)}" for backbone, gains in backbones.items())
    return f"Over its CNN the study's ResNet50 gained {gains}" + (f"; here, single views: {here}." if here else ".")


def labels(results: dict, eda: dict | None = None, **_) -> str:
    data = results["data"]
    classes = len(data.get("class_names", [])) or 10
    draw = f"{data.get('train', 0):,} training images stratified, {data.get('train', 0) // classes:,} per class"
    if eda:
        return f"{eda['findings']['size']} Each seed draws its {draw}."
    return f"Balanced classes: each seed draws its {draw}."


def colours(results: dict, eda: dict | None = None, **_) -> str:
    """Notebook 01's colour finding where its eda.json is given; runs from before it wrote one say what the
    figures show."""
    if eda:
        return eda["findings"]["colour"]
    return ("Statistics of the raw training pixels; the CNN scales them to [0, 1], each backbone preprocesses "
            "them its own way.")


def method(results: dict, **_) -> str | None:
    tuned = [(n, m) for n, m in results["models"].items() if parse_stage(n)[1] == "finetuned"]
    if not tuned:
        return "Stage 1 trains a new head on the frozen backbone's features."
    return "Stage 2: " + "; ".join(f"{label(n).rsplit(' ', 1)[0]} trains {_depth(m, parse_stage(n)[0])}"
                                    for n, m in tuned) + "."


def _depth(entry: dict, backbone) -> str:
    """What stage 2 trains, e.g. "all 140 layers after the input, BatchNorm statistics frozen"."""
    recipe = Stage2Recipe.from_entry(entry)
    words = depth_words(recipe.layers, backbone)
    frozen = ", BatchNorm statistics frozen" if recipe.batchnorm == "frozen" else ""
    return (words if words.startswith("all") else f"its {words}") + frozen


def cnn(results: dict, **_) -> str | None:
    m = results["models"].get("cnn")
    if m is None:
        return None
    single, reported = single_view_test_accuracy(m), stage("cnn").study_accuracy
    return (f"The study's CNN, rebuilt: {format_accuracy(single)} against the study's {format_accuracy(reported)} "
            f"({points_difference(single, reported):+.1f} points), single views.")


def scratch(results: dict, **_) -> str | None:
    models = results["models"]
    if "scratch" not in models:
        return None
    accuracy = format_accuracy(single_view_test_accuracy(models["scratch"]))
    over = f", {_gain(results, 'scratch', 'cnn')} over {BASELINES['cnn']}" if "cnn" in models else ""
    return (f"The ResNet from scratch: {accuracy}{over}, single views, in "
            f"{stage_seconds(models['scratch']):,.0f} s of training.")


def stages(results: dict, **_) -> str:
    pairs = [(n, n.replace("_finetuned", "_head")) for n in results["models"] if parse_stage(n)[1] == "finetuned"]
    pairs = [(n, head) for n, head in pairs if head in results["models"]]
    if not pairs:
        return "No stage was fine-tuned in this run: the heads show what frozen ImageNet features give alone."
    return "; ".join(f"{label(n)} adds {_gain(results, n, head)} over its head" for n, head in pairs) + "."


def augmentation(results: dict, **_) -> str:
    mirror = " (the test-time mirror aside)" if results["config"].get("test_time_flip") else ""
    return f"Only training images are augmented; validation and test images are seen as they are{mirror}."


def comparison(results: dict, **_) -> str | None:
    best = best_model(results)
    if best is None:
        return None
    accuracy = format_accuracy(single_view_test_accuracy(results["models"][best]))
    return f"Chosen on validation: {label(best)}, {accuracy} test accuracy, single view."


def curves_of_training(results: dict, **_) -> str | None:
    best = best_model(results)
    if best is None:
        return None
    history = results["models"][best]["history"]
    return (f"{label(best)} ends at {format_accuracy(history['accuracy'][-1])} training and "
            f"{format_accuracy(history['val_accuracy'][-1])} validation accuracy in its last epoch.")


def cost(results: dict, **_) -> str | None:
    best = _best_transfer(results)
    models = results["models"]
    if best is None or "cnn" not in models:
        return None
    seconds = training_seconds(models, best)
    return (f"{label(best)}: {_gain(results, best, 'cnn')} over the CNN for "
            f"{seconds / max(stage_seconds(models['cnn']), 1e-9):,.0f}x its training seconds.")


def choices(results: dict, **_) -> str:
    """The rule for choosing, and the largest seed spread of a validation accuracy that it must see past."""
    spreads = {name: spread["sd"] for name, spread in validation_spreads(results["models"]).items()}
    rule = "Choices are made on validation data only, under rules committed before their runs"
    if not spreads:
        return rule + "; this run is one seed, so its gaps of about a point may be noise."
    widest = max(spreads, key=spreads.get)
    return (f"{rule}: seeds alone move {label(widest)}'s validation accuracy by {100 * spreads[widest]:.2f} "
            "points (sd), so one run's gap of that size is noise.")


def first(sentences) -> str | None:
    """The first of a slide's findings as its takeaway."""
    return sentences[0] if sentences else None


def learning_curve(results: dict, curves: dict, **_) -> str | None:
    return first(lead_findings(curves))


def gaps(results: dict, curves: dict, **_) -> str | None:
    return first(gap_findings(curves))


def resolution(results: dict, curves: dict, **_) -> str | None:
    return first(resolution_findings(curves))


def _finding(results: dict, start: str) -> str | None:
    return next((s for s in findings(results) if s.startswith(start)), None)


def errors(results: dict, **_) -> str | None:
    return _finding(results, "Most common mistake")


def mistakes(results: dict, **_) -> str | None:
    return _finding(results, "Weakest class")


def summary(results: dict, **_) -> str:
    return findings(results)[0]


def limitations(results: dict, **_) -> str:
    if results.get("not_run"):
        return "Stages not run here keep the study's numbers, unchecked; no random-init backbone stands in for them."
    return "One dataset copy, one machine: the spread over seeds is the noise these numbers carry."


def provenance(results: dict, curves: dict | None = None, **_) -> str:
    made = f"results.json (commit {short_commit(results['provenance'])})"
    if curves is not None and short_commit(curves["provenance"]) != short_commit(results["provenance"]):
        made += f" and learning_curves.json (commit {short_commit(curves['provenance'])})"
    return f"Every number in this deck comes from {made}."
