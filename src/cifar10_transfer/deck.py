"""The slide deck: a 16:9 PDF of selectable text, computed from the results files and the run's figures alone."""

from __future__ import annotations

import os
import textwrap
from functools import partial
from pathlib import Path

from matplotlib import rc_context
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from . import takeaways
from .curve_report import gap_findings, lead_findings, resolution_findings
from .figures import FIGURES, training_curve
from .plots import PALETTE, STYLE, format_accuracy
from .publish import atomic_write
from .recipe import SCRATCH_BATCH, ScratchRecipe, Stage2Recipe, describe, has_frozen_prefix
from .registry import parse_stage
from .report import (findings, finished_date, not_run_reason, run_seed_spread, short_commit, stage_label, table_rows,
                     weights_description)
from .results import best_model, single_view_test_accuracy, stage_seconds, validation_spreads
from .slide_layout import CURVE_GRID, CURVES_PER_SLIDE, PLACED, bullets, curve_cell, flow, frame, picture, pictures
from .study import STUDY_STAGES, label, stage, table_stages

DECK_STYLE = {**STYLE, "pdf.fonttype": 42, "axes.grid": False}  # 42: real, selectable TrueType text
# Fixed metadata (no dates) so the same results always give the same PDF bytes.
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Creator": "cifar10-transfer", "Producer": "cifar10-transfer"}



def _listed(names) -> str:
    """Names in prose: 'a', 'a and b', 'a, b and c'."""
    names = list(names)
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _limitations(results: dict, curves: dict | None = None) -> list:
    prov, cfg, data = results["provenance"], results["config"], results["data"]
    items = []
    if "JPEG" in prov.get("data", ""):
        items.append("Data is the CIFAR-10 JPEG copy, not the original images: how much its re-encoding "
                     "changes accuracy is not measured here, so small gaps to the study may come from it.")
    if str(prov.get("weights", "")).lower() == "none":
        items.append("Weights were 'none': the backbones started from random initialization, which is NOT "
                     "transfer learning; their numbers say nothing about ImageNet pretraining.")
    missing = [s.name for s in table_stages(results["models"]) if s.name not in results["models"]]
    items += [f"{label(n)} not run: {not_run_reason(results, n)}." for n in missing]
    seeded = [n for n, m in results["models"].items() if "runs" in m]
    if seeded:
        groups = {}  # the seeds a stage ran under: its stages (the long ones may run under fewer)
        for n in seeded:
            groups.setdefault(tuple(run["seed"] for run in results["models"][n]["runs"]), []).append(label(n))
        under = "; ".join(f"{_listed(names)} under seeds {', '.join(map(str, seeds))}"
                          for seeds, names in groups.items())
        items.append(f"On {data.get('train', 0):,} training images, {under}: 'This run' is each stage's mean, "
                     "'Over seeds' adds the standard deviation and the 95% confidence interval of the mean.")
    else:
        items.append(f"This run is one seed ({cfg.get('seed')}) on {data.get('train', 0):,} training images: "
                     "differences of about a point may be run-to-run noise.")
    spread = run_seed_spread(results, curves)
    if spread:
        items.append(f"The 'Over seeds' column gives the spread of {_listed(label(n) for n in spread)} "
                     "over the learning curves' seeds at this size.")
    once = [label(n) for n in results["models"] if n not in spread and n not in seeded]
    steps = [f"Next: repeat {_listed(once)} with several seeds and report the spread."] if once else []
    if results.get("profile") != "full":
        steps.append("Next: train on all 50,000 training images (the full profile).")
    if missing:
        steps.append("Next: run the missing models once the reason above is fixed.")
    return items + steps


def _stage2_recipe(name: str, entry: dict) -> str:
    """One fine-tuned stage's recipe in words, from its results entry."""
    return f"{label(name).rsplit(' ', 1)[0]}: {describe(Stage2Recipe.from_entry(entry), parse_stage(name)[0])}"


def _stage2_depth(models: dict) -> str:
    """What stage 2 unfreezes, in the pipeline diagram: the whole backbone, its last layers, or either."""
    whole = {not has_frozen_prefix(parse_stage(n)[0], Stage2Recipe.from_entry(m).layers)
             for n, m in models.items() if parse_stage(n)[1] == "finetuned"}
    return {frozenset({True}): "whole backbone\ntrains", frozenset({True, False}): "last or all\nlayers train"}.get(
        frozenset(whole), "last layers\nunfrozen")


def _pipeline(fig: Figure, cfg: dict, backbones: list[str], models: dict) -> None:
    size = cfg.get("image_size", 224)
    names = "\n".join(backbones) or "ImageNet"
    steps = ["CIFAR-10\nimage\n32×32×3", f"resize to\n{size}×{size}",
             "the backbone's\nImageNet\npreprocessing",
             f"{names}\nbackbone\n\nstage 1: frozen\nstage 2:\n{_stage2_depth(models)}",
             "head\n\nGAP\nDense(256)\nDropout(0.5)\nDense(10)", "prediction\n(10 classes)"]
    ax = fig.add_axes([0.04, 0.42, 0.92, 0.4], xlim=(0, len(steps)), ylim=(0, 1), frame_on=False, xticks=[], yticks=[])
    for i, text in enumerate(steps):
        color = PALETTE["primary"] if i in (3, 4) else PALETTE["muted"]  # the two trained parts
        ax.add_patch(FancyBboxPatch((i + 0.06, 0.05), 0.78, 0.9, boxstyle="round,pad=0.02", facecolor="white",
                                    edgecolor=color, linewidth=2))
        ax.text(i + 0.45, 0.5, text, ha="center", va="center", fontsize=13, linespacing=1.4)
        if i:
            ax.annotate("", xy=(i + 0.04, 0.5), xytext=(i - 0.14, 0.5), arrowprops=dict(arrowstyle="-|>", lw=1.5))


def _table(fig: Figure, results: dict, rect: list, curves: dict | None = None) -> None:
    ax = fig.add_axes(rect, frame_on=False, xticks=[], yticks=[])
    mirrored = bool(results["config"].get("test_time_flip"))
    header = ["Model", "Study", "This run (1 view)", "Over seeds (1 view)", "vs study", *(["Mirror"] * mirrored),
              "Mean train s"]
    # One line per cell so rows never overflow; the full not-run reason is on the limitations slide.
    cells = [[r["model"], r["study"], textwrap.shorten(r["run"], 34, placeholder="…"), r["seeds"], r["diff"],
              *([r["mirror"]] * mirrored), r["seconds"]] for r in table_rows(results, curves)]
    # Widths fit the longest cells at 10 pt: a stage's name ("ResNet from scratch (strong baseline)"),
    # a not-run reason (34 characters) and a seed spread, e.g. "22.0% ± 6.8 (95% CI -39.0–83.0, 2 seeds)".
    widths = [0.23, 0.06, 0.20, 0.27, 0.06, *([0.07] * mirrored), 0.11]
    table = ax.table(cellText=cells, colLabels=header, bbox=[0, 0, 1, 1], cellLoc="center",
                     colWidths=[w / sum(widths) for w in widths])
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor(PALETTE["muted"])
        if row == 0:
            cell.set_text_props(weight="bold", color="white")
            cell.set_facecolor(PALETTE["primary"])


PROFILE_WORDS = {"seed": "The study's settings", "smoke": "Smoke test: a tiny subset, one epoch a stage",
                 "full": "All 50,000 training images"}  # the run's profile, in words


def _title(fig: Figure, results: dict, **_) -> None:
    prov, best = results["provenance"], best_model(results)
    fig.text(0.5, 0.64, "CIFAR-10: training from scratch\nvs ImageNet transfer learning", fontsize=32,
             weight="bold", ha="center", va="bottom", color=PALETTE["primary"], linespacing=1.3)
    profile = results.get("profile", "unknown")
    lines = [textwrap.fill(f"Data: {prov.get('data', 'unknown')}", 80),
             f"{PROFILE_WORDS.get(profile, f'Profile {profile}')} · finished {finished_date(prov)}"]
    if best:
        entry = results["models"][best]
        over = f", mean of {len(entry['runs'])} seeds" if "runs" in entry else ""
        lines.append(f"Best on validation: {label(best)}, {format_accuracy(single_view_test_accuracy(entry))} "
                     f"test accuracy (single view{over})")
    fig.text(0.5, 0.55, "\n".join(lines), fontsize=18, ha="center", va="top", linespacing=1.6)


def _problem(fig: Figure, results: dict, **_) -> None:
    cfg, prov, data = results["config"], results["provenance"], results["data"]
    names = data.get("class_names", [])
    bullets(fig, [
        "Question: how much does ImageNet pretraining help over a small CNN trained from scratch?"
        + (" And over a strong network trained from scratch with a modern recipe?"
           if "scratch" in results["models"] else ""),
        f"CIFAR-10: 32×32 colour images in {len(names)} classes: {', '.join(names)}.",
        f"This run: {data.get('train', 0):,} training, {data.get('val', 0):,} validation and "
        f"{data.get('test', 0):,} test images: {data.get('train', 0) + data.get('val', 0):,} training images "
        f"drawn per seed, {data.get('val', 0):,} of them held out for validation; "
        + (f"seeds {cfg['seeds'].replace(',', ', ')}." if cfg.get("seeds") else f"seed {cfg.get('seed')}."),
        f"Data source: {prov.get('data', 'unknown')}.",
        "The study reported " + ", ".join(f"{format_accuracy(stage(n).study_accuracy)} ({label(n)})"
                                         for n in STUDY_STAGES)
        + "; the rows not run here (see the table) are the study's numbers, not checked by this deck.",
        "Metric: top-1 accuracy on held-out test images, one view per image (single view), as the study measured"
        + ("; the accuracy with each image's probabilities averaged with its mirror image's is shown apart."
           if results["config"].get("test_time_flip") else ".")])


def _method(fig: Figure, results: dict, **_) -> None:
    models = results["models"]
    backbones = list(dict.fromkeys(label(s.name).rsplit(" ", 1)[0] for s in table_stages(models)
                                   if s.backbone and s.name in models))
    _pipeline(fig, results["config"], backbones, models)
    bullets(fig, ["Transfer learning reuses ImageNet features: only the head (stage 1), then also the "
                   "backbone's layers that stage 2 unfreezes, learn from CIFAR-10.",
                   "The baseline CNN skips all of this: it sees the 32×32 images directly."],
             box=(0.05, 0.08, 0.95, 0.4), size=18)


def _outcome(results: dict, name: str) -> str:
    """A stage's test accuracy, the study's beside it, and its seconds; or why it did not run."""
    m, reported = results["models"].get(name), stage(name).study_accuracy
    if not m:
        return f"{label(name)}: not run ({not_run_reason(results, name)})"
    study = f" (study: {format_accuracy(reported)})" if reported is not None else ""
    view = " single view" if "test_time_flip" in m else ""  # like the study's, where the run also mirrored
    return (f"{stage_label(results, name)}: {format_accuracy(single_view_test_accuracy(m))}{view}{study} in "
            f"{stage_seconds(m):,.0f} s of training")


def _cnn(fig: Figure, results: dict, images: Path, **_) -> None:
    m = results["models"].get("cnn")
    items = ["Input 32×32×3, scaled to [0, 1]", "3 blocks: Conv2D 3×3 (32, 64, 128 filters, ReLU) + MaxPool",
             "Flatten → Dense(128, ReLU) → Dropout(0.3) → Dense(10, softmax)"]
    if m:
        items += [f"{m['params']:,} parameters, {m.get('epochs')} epochs, "
                  f"{m.get('images_per_second', 0):,.0f} images/s ({m.get('precision', '?')})"]
    bullets(fig, items + [_outcome(results, "cnn")], box=(0.05, 0.08, 0.45, 0.84), size=18)
    picture(fig, images / training_curve("cnn").file, [0.47, 0.2, 0.5, 0.6])


def _scratch(fig: Figure, results: dict, images: Path, **_) -> None:
    m = results["models"]["scratch"]
    recipe = ScratchRecipe(**m.get("recipe", {}))
    w, peak = recipe.width, recipe.peak_rate(results["config"].get("batch_size", SCRATCH_BATCH))
    epochs = f"{m['epochs']} epoch{'s' * (m['epochs'] != 1)}"
    bullets(fig, [
        f"ResNet-9's layout (Page 2018) at 32×32: a stem of {w} channels, stages of {2 * w}, {4 * w} and {8 * w}, "
        f"two residual blocks, BatchNorm; {m['params']:,} parameters",
        f"Random flips and shifts of up to {recipe.translate} pixels; label smoothing {recipe.label_smoothing:g}",
        f"SGD with Nesterov momentum {recipe.momentum:g} and weight decay; the rate rises to {peak:g} over the "
        f"first {recipe.warmup:.0%} of the steps, then falls as a cosine to 0; {epochs}",
        "Width set to fit a CPU time budget; epochs chosen on validation under rules committed first",
        _outcome(results, "scratch")], box=(0.05, 0.08, 0.45, 0.84), size=16)
    picture(fig, images / training_curve("scratch").file, [0.47, 0.2, 0.5, 0.6])


def _stages(fig: Figure, results: dict, **_) -> None:
    cfg, models = results["config"], results["models"]
    mode, flips = cfg.get("head_mode"), " (plus flipped copies)" if cfg.get("cache_flips") else ""
    how = (f"Cached: backbone features computed once{flips}, the head trained on them" if mode == "cached"
           else "End to end: images pass the frozen backbone every epoch (the study's way)")
    recipes = [_stage2_recipe(n, m) for n, m in models.items() if parse_stage(n)[1] == "finetuned"]
    for box, heading, kind, items in (
            ((0.05, 0.08, 0.48, 0.76), "Stage 1: head only", "head",
             [f"Backbone frozen; {cfg.get('head_epochs')} epochs at learning rate {cfg.get('head_lr'):g}",
              how]),
            ((0.52, 0.08, 0.95, 0.76), "Stage 2: fine-tuning", "finetuned",
             [f"The layers each recipe names are unfrozen and trained on; {cfg.get('finetune_epochs')} epochs",
              *recipes])):
        fig.text(box[0], 0.8, heading, fontsize=22, weight="bold", color=PALETTE["primary"])
        bullets(fig, items + [_outcome(results, s.name) for s in table_stages(models)
                               if s.name.endswith("_" + kind)], box=box, size=16)


def _augmentation(fig: Figure, results: dict, images: Path, **_) -> None:
    cfg = results["config"]
    picture(fig, images / FIGURES["augmentation"].file, PLACED["augmentation"])
    bullets(fig, [("Random flip, crop/zoom, brightness and contrast" if cfg.get("augment")
                    else "Augmentation off in this run"),
                   "Applied to training images after resizing, before the backbone's own preprocessing",
                   "Seeded: the same seed gives the same augmented epochs",
                   "The baseline CNN trains on the images as they are, as in the study"]
             + (["The head trains on features of the plain images computed once, so augmentation acts in "
                 "stage 2 only"] if cfg.get("head_mode") == "cached" else []),
             box=(0.52, 0.08, 0.95, 0.84), size=18)


def _comparison(fig: Figure, results: dict, images: Path, curves: dict | None, **_) -> None:
    _table(fig, results, [0.05, 0.56, 0.9, 0.28], curves)
    picture(fig, images / FIGURES["model_comparison"].file, PLACED["model_comparison"])


def _curve_pages(results: dict, images: Path) -> list[list[Path]]:
    """The training-curve figures of the stages run, CURVES_PER_SLIDE to a slide."""
    paths = [images / training_curve(s.name).file for s in table_stages(results["models"])]
    found = [path for path in paths if path.is_file()] or [images / training_curve("cnn").file]
    return [found[i:i + CURVES_PER_SLIDE] for i in range(0, len(found), CURVES_PER_SLIDE)]


def _training_curves(fig: Figure, paths: list[Path], **_) -> None:
    left, bottom, _, height = CURVE_GRID
    top = bottom + height
    width, height = curve_cell(len(paths))
    columns = 1 if len(paths) == 1 else 2
    for index, path in enumerate(paths):
        row, column = divmod(index, columns)
        picture(fig, path, [left + column * width / 0.98, top - (row + 1) * height / 0.98, width, height])


def _curve_slide(name: str, resolution: bool):
    """A curve figure beside its findings: the input-size sentence (`resolution`) or the learning curves'."""
    def draw(fig: Figure, images: Path, curves: dict, **_) -> None:
        lines = resolution_findings(curves) if resolution else lead_findings(curves)
        picture(fig, images / FIGURES[name].file, PLACED[name])
        bullets(fig, lines or (["(one image size only)"] if resolution else []), box=(0.6, 0.08, 0.97, 0.84),
                 size=16)
    return draw


def _choices(fig: Figure, results: dict, **_) -> None:
    models, val = results["models"], results["data"].get("val", 0)
    best = best_model(results)
    items = [f"Test data chose nothing: the recipes and the best model were chosen on the {val:,} validation "
             "images only. The test-time mirror, first kept after its test gain was seen, was re-decided over the "
             "committed reference's seeds under a rule committed before those runs (research/README.md)."]
    if best and val:
        p = models[best].get("test_time_flip", {}).get("single_view_val_accuracy", models[best]["val_accuracy"])
        items.append(f"One validation image is {100 / val:.2f} points; near {label(best)}'s {format_accuracy(p)}, "
                     f"the binomial standard error of a validation accuracy is {100 * (p * (1 - p) / val) ** 0.5:.2f} "
                     "points.")
    spreads = validation_spreads(models)
    if spreads:
        items.append("Seed spread of single-view validation accuracy (sd, points): " + "; ".join(
            f"{label(n)} {100 * s['sd']:.2f} over {s['n']} seeds" for n, s in spreads.items()) + ".")
    else:
        items.append("This run is one seed: a difference of about a point between two single runs can be noise.")
    items += ["A recipe change needs a mean validation gain over three or more seeds that is larger than its "
              "standard error, under a rule committed before the runs (research/README.md); otherwise the simpler "
              "recipe stays.",
              "The best model is the stage with the highest mean validation accuracy."]
    bullets(fig, items, size=18)


def _resolved_stage2(results: dict) -> str:
    """Each fine-tuned stage's stage-2 recipe as it ran, every value resolved (none left to a default)."""
    size = results["config"].get("image_size")  # a recipe without a training size of its own trains at this
    return "; ".join(f"{label(n)}: " + ", ".join(f"{k}={size if k == 'image_size' and v is None else v}"
                                                  for k, v in Stage2Recipe.from_entry(m).to_dict().items())
                     for n, m in results["models"].items() if parse_stage(n)[1] == "finetuned") or "none run"


def _instruction_sets(provenance: dict) -> str:
    """The CPU's recorded instruction sets, which decide its kernels' speed (and so seconds and seeded results)."""
    if "cpu_isa" not in provenance:  # results from before they were recorded
        return ""
    return "; instruction sets: " + (", ".join(provenance["cpu_isa"]) or "none recorded")


def _provenance(fig: Figure, results: dict, curves: dict | None = None, **_) -> None:
    cfg, prov = {k: v for k, v in results["config"].items() if v is not None}, results["provenance"]
    packages = ", ".join(f"{k} {v}" for k, v in prov.get("packages", {}).items())
    hardware = prov.get("hardware", "unknown") + _instruction_sets(prov)
    pairs = [("Git commit", short_commit(prov)),
             ("Finished", finished_date(prov)),  # older results date a resumed run's start from its last leg
             ("Device", prov.get("device", "unknown")), ("Hardware", hardware),
             ("Software", f"Python {prov.get('python', '?')}; {packages}"), ("Data", prov.get("data", "unknown")),
             ("Fingerprint", (prov.get("data_fingerprint") or "unknown")[:16] + "…"),
             ("Weights", weights_description(results)), ("Profile", results.get("profile", "unknown")),
             ("Config", ", ".join(f"{k}={v}" for k, v in cfg.items()) + " (unset keys: their defaults)"),
             ("Stage 2", _resolved_stage2(results))]
    if curves is not None:
        pairs.append(("Curves", f"learning_curves.json: commit {short_commit(curves['provenance'])}, "
                                f"finished {finished_date(curves['provenance'])}"))
    flow(fig, [(key, 0.0, str(value), 1.9) for key, value in pairs], size=16)


# (title, draw, takeaway) of each slide in order, draw(fig, results=, images=, curves=) and
# takeaway(results=, curves=); the curve slides where notebook 03 ran.
_OPENING = (
    ("cifar10-transfer", _title, takeaways.title),
    ("Problem and dataset", _problem, takeaways.problem),
    ("EDA: labels and samples", pictures("train_label_distribution", "dataset_samples"), takeaways.labels),
    ("EDA: colour statistics", pictures("avg_rgb_by_class", "pixel_intensity"), takeaways.colours),
    ("Method: the transfer-learning pipeline", _method, takeaways.method),
    ("Baseline: a small CNN from scratch", _cnn, takeaways.cnn),
    ("Strong baseline: a ResNet from scratch", _scratch, takeaways.scratch),  # where the run trained it
    ("Transfer learning in two stages", _stages, takeaways.stages),
    ("Augmentation", _augmentation, takeaways.augmentation),
    ("Results: this run vs the study", _comparison, takeaways.comparison),
    ("Accuracy versus training cost", pictures("accuracy_vs_cost"), takeaways.cost),
    ("How choices were made", _choices, takeaways.choices),
    ("Training curves", _training_curves, takeaways.curves_of_training),
)
_CURVES = ((FIGURES["learning_curve"].caption, _curve_slide("learning_curve", resolution=False),
            takeaways.learning_curve),
           ("Learning curves: gaps and cost", lambda fig, curves, **_: bullets(fig, gap_findings(curves)),
            takeaways.gaps),
           (FIGURES["resolution_cost"].caption, _curve_slide("resolution_cost", resolution=True), takeaways.resolution))
_CLOSING = (
    ("Confusion matrix and common errors", pictures("confusion_matrix", "common_errors"), takeaways.errors),
    ("Misclassified test images", pictures("misclassified_examples"), takeaways.mistakes),
    ("Findings", lambda fig, results, **_: bullets(fig, findings(results)), takeaways.summary),
    ("Limitations and next steps", lambda fig, results, curves, **_: bullets(fig, _limitations(results, curves)),
     takeaways.limitations),
    ("Provenance", _provenance, takeaways.provenance),
)


def _slides(results: dict, images: Path, curves: dict | None = None, eda: dict | None = None) -> list:
    """(title, draw, takeaway) for each slide; draw(fig) fills the body."""
    slides = []
    for title, draw, takeaway in (*_OPENING, *(_CURVES if curves is not None else ()), *_CLOSING):
        if draw is _scratch and "scratch" not in results["models"]:
            continue
        line = takeaway(results=results, curves=curves, eda=eda)
        pages = _curve_pages(results, Path(images)) if draw is _training_curves else [None]
        slides += [(title + (f" ({k} of {len(pages)})" if len(pages) > 1 else ""),
                    partial(draw, results=results, images=Path(images), curves=curves, paths=page), line)
                   for k, page in enumerate(pages, 1)]
    return slides


def render_deck(results: dict, images_dir: str | os.PathLike, pdf_path: str | os.PathLike,
                curves: dict | None = None, eda: dict | None = None) -> Path:
    """Write the 16:9 PDF deck for `results` (and notebook 03's `curves` and notebook 01's `eda`, when
    given) with figures from `images_dir`; same inputs, same bytes."""
    slides = _slides(results, Path(images_dir), curves, eda)

    def write(tmp: str) -> None:
        # The rc context must cover PdfPages.close(): fonts are embedded (type 42) when it closes.
        with rc_context(DECK_STYLE), PdfPages(tmp, metadata=PDF_METADATA) as pdf:
            for number, (title, draw, takeaway) in enumerate(slides, 1):
                fig = frame(title, number, len(slides), takeaway)
                draw(fig)
                pdf.savefig(fig)

    return atomic_write(pdf_path, write)
