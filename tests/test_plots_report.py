"""Fast tests of the figures, the README table and the slide deck on synthetic data."""

from __future__ import annotations

import ast
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pypdf
from matplotlib.container import ErrorbarContainer
import pytest
from matplotlib.figure import Figure

from cifar10_transfer import deck, plots, report, takeaways
from cifar10_transfer.errors import UserError
from cifar10_transfer.results import load_results

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10  # 20 images per class
    images = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    return images, labels


def _model(accuracy: float, params: int, epochs: int = 3) -> dict:
    matrix = np.full((10, 10), 5, dtype=int)
    np.fill_diagonal(matrix, 80)
    per_class = {c: {"precision": 0.8, "recall": 0.7, "f1": 0.75, "support": 1000} for c in CLASSES}
    per_class["cat"] = {"precision": 0.5, "recall": 0.4, "f1": 0.44, "support": 1000}
    return {"test_accuracy": accuracy, "test_loss": 1.0, "train_accuracy": accuracy + 0.05,
            "val_accuracy": accuracy, "params": params, "trainable_params": params, "epochs": epochs,
            "seconds": 41.3, "images_per_second": 1900.0, "precision": "float32",
            "history": {"loss": [2.0, 1.5, 1.2][:epochs], "accuracy": [0.3, 0.5, 0.6][:epochs],
                        "val_loss": [2.1, 1.7, 1.4][:epochs], "val_accuracy": [0.3, 0.45, 0.55][:epochs]},
            "per_class": per_class, "confusion_matrix": matrix.tolist(),
            "top_confusions": [{"true": "cat", "predicted": "dog", "count": 212},
                               {"true": "truck", "predicted": "automobile", "count": 90}]}


@pytest.fixture
def results():
    """A run where the CNN and the head-only ResNet50 ran and fine-tuning did not."""
    return {
        "profile": "seed",
        "config": {"train_size": 10000, "val_fraction": 0.2, "test_size": None, "seed": 3, "image_size": 224,
                   "batch_size": 64, "augment": True, "cnn_epochs": 3, "head_epochs": 3, "finetune_epochs": 3,
                   "finetune_layers": 30, "head_lr": 0.001, "finetune_lr": 1e-05, "head_mode": "cached",
                   "cache_flips": False, "models": "cnn,resnet50_head"},
        "provenance": {"git_commit": "abc1234def5678", "git_dirty": False, "python": "3.11.7",
                       "packages": {"tensorflow": "2.21.0", "numpy": "2.4.6"}, "device": "CPU (2 cores)",
                       "hardware": "AMD EPYC, 2 cores, 23 GiB",
                       "data": "CIFAR-10 (JPEG copy, image folders, cifar10-jpeg/)",
                       "data_fingerprint": "e3b0c44298fc1c149afbf4c8996fb924", "weights": "imagenet",
                       "started": "2026-11-29T02:10:00+00:00", "finished": "2026-11-29T02:14:00+00:00"},
        "data": {"train": 8000, "val": 2000, "test": 10000, "class_names": CLASSES},
        "models": {"cnn": _model(0.6123, 356810), "resnet50_head": _model(0.8812, 525322)},
        "not_run": {"resnet50_finetuned": "ImageNet weights unavailable offline"},
        "best_model": "resnet50_head",
    }


def _figure_cases(arrays, results):
    images, labels = arrays
    variants = np.stack([images[:3], images[:3, ::-1], images[:3, :, ::-1]], axis=1)
    model = results["models"]["cnn"]
    return {
        "train_label_distribution": plots.label_distribution(labels, CLASSES),
        "dataset_samples": plots.sample_grid(images, labels, CLASSES, per_class=4, seed=1),
        "avg_rgb_by_class": plots.average_rgb_by_class(images, labels, CLASSES),
        "pixel_intensity": plots.pixel_intensity(images, labels, CLASSES),
        "augmentation": plots.augmentation_grid(images[:3], variants),
        "cnn_curve": plots.training_curves(model["history"], "Baseline CNN"),
        "confusion_matrix": plots.confusion_matrix_plot(model["confusion_matrix"], CLASSES, "CNN"),
        "common_errors": plots.common_errors(model["top_confusions"], "CNN errors"),
        "misclassified_examples": plots.misclassified_examples(images[:5], labels[:5], (labels[:5] + 1) % 10,
                                                               np.full(5, 0.87), CLASSES),
        "per_class_metrics": plots.per_class_metrics(model["per_class"], "CNN per class"),
        "model_comparison": plots.model_comparison(results),
    }


def test_every_deck_figure_fits_its_place_so_its_text_is_never_below_9_pt(arrays, results):
    from matplotlib.text import Text

    from cifar10_transfer.slide_layout import PLACED, SLIDE_H, SLIDE_W, curve_cell

    places = {**{name: rect[2:] for name, rect in PLACED.items()}, "cnn_curve": curve_cell(4)}
    cases = _figure_cases(arrays, results)
    cases["accuracy_vs_cost"] = plots.accuracy_vs_cost(results)
    checked = [name for name in cases if name in places]
    assert len(checked) == 11  # all but the learning curves' two, which test_curve_stats.py checks
    for name in checked:
        width, height = cases[name].get_size_inches()
        assert width <= places[name][0] * SLIDE_W + 0.01 and height <= places[name][1] * SLIDE_H + 0.01, name
        sizes = [t.get_fontsize() for t in cases[name].findobj(Text) if t.get_text().strip() and t.get_visible()]
        assert sizes and min(sizes) >= 9, name


def test_every_figure_is_returned_and_saved_as_png(arrays, results, tmp_path):
    for name, fig in _figure_cases(arrays, results).items():
        assert isinstance(fig, Figure), name
        path = plots.save_figure(fig, tmp_path / "nested" / f"{name}.png")
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
    # Atomic writes leave no temp files behind.
    assert sorted(p.name for p in (tmp_path / "nested").iterdir()) == sorted(
        f"{name}.png" for name in _figure_cases(arrays, results))


def test_saved_png_has_fixed_dpi(arrays, tmp_path):
    _, labels = arrays
    path = plots.save_figure(plots.label_distribution(labels, CLASSES), tmp_path / "labels.png")
    assert mpimg.imread(path).shape[:2] == (int(4.5 * plots.DPI), int(6.5 * plots.DPI))


def test_label_distribution_bars_are_class_counts():
    labels = np.array([0, 0, 0, 1, 2, 2])
    fig = plots.label_distribution(labels, ["a", "b", "c"])
    assert [p.get_height() for p in fig.axes[0].patches] == [3, 1, 2]


def test_sample_grid_is_seeded(arrays, tmp_path):
    images, labels = arrays
    render = lambda seed, name: plots.save_figure(
        plots.sample_grid(images, labels, CLASSES, per_class=3, seed=seed), tmp_path / name).read_bytes()
    assert render(5, "a.png") == render(5, "b.png")
    assert render(5, "c.png") != render(6, "d.png")


def test_figure_text_content(arrays, results):
    images, labels = arrays
    fig = plots.misclassified_examples(images[:2], np.array([3, 1]), np.array([5, 9]), np.array([0.87, 0.5]), CLASSES)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == [
        "true: cat / pred: dog (87%)", "true: automobile / pred: truck (50%)"]
    many = [{"true": "cat", "predicted": "dog", "count": 20 - i} for i in range(14)]
    errors = plots.common_errors(many, "errors")
    assert len(errors.axes[0].patches) == 10
    assert errors.axes[0].get_yticklabels()[0].get_text() == "cat → dog"
    matrix = np.arange(9).reshape(3, 3)
    cm = plots.confusion_matrix_plot(matrix, ["a", "b", "c"], "cm")
    assert [t.get_text() for t in cm.axes[0].texts] == [str(v) for v in range(9)]


def test_training_curves_single_epoch_uses_markers():
    history = {"loss": [1.0], "accuracy": [0.5], "val_loss": [1.1], "val_accuracy": [0.4]}
    fig = plots.training_curves(history, "one epoch")
    loss_ax = fig.axes[0]
    assert len(loss_ax.lines) == 2
    assert all(line.get_marker() == "o" for line in loss_ax.lines)
    assert list(loss_ax.get_xticks()) == [1]


def test_model_comparison_marks_models_not_run(results):
    fig = plots.model_comparison(results)
    ax = fig.axes[0]
    checked, outlined, this_run = ax.containers  # the study's bars beside stages run here, then the others
    assert [p.get_height() for p in checked] == [0.605, 0.887] and [p.get_height() for p in outlined] == [0.910]
    assert outlined[0].get_facecolor()[3] == 0 < checked[0].get_facecolor()[3]  # an outline, not a result
    assert [p.get_height() for p in this_run] == [0.6123, 0.8812]
    assert [t.get_text() for t in ax.texts].count("not run") == 1
    assert "JPEG copy" in ax.get_title()


def test_results_table_markdown(results):
    table = report.results_table_markdown(results)
    lines = table.splitlines()
    assert lines[0] == ("| Model | Study (reported) | This run (single view) | Over seeds (mean ± sd) "
                        "| Difference (points) | Training seconds, mean over seeds (fine-tuned: stage 2 + head) |")
    assert lines[2] == "| Baseline CNN | 60.5% | 61.2% | 1 seed | +0.7 | 41 |"
    assert lines[3] == "| ResNet50 head-only | 88.7% | 88.1% | 1 seed | -0.6 | 41 |"
    assert lines[4] == ("| ResNet50 fine-tuned | 91.0% | not run: ImageNet weights unavailable offline "
                        "| — | — | — |")
    provenance = lines[-1]
    assert provenance.startswith("*") and provenance.endswith("*")
    for part in ("profile seed", "weights: imagenet", "2026-11-29 02:14 UTC", "commit abc1234", "JPEG copy"):
        assert part in provenance


def test_results_table_default_reason_and_computed_values(results):
    results["models"]["cnn"]["test_accuracy"] = 0.5
    del results["not_run"]
    lines = report.results_table_markdown(results).splitlines()
    assert lines[2] == "| Baseline CNN | 60.5% | 50.0% | 1 seed | -10.5 | 41 |"
    assert lines[4] == "| ResNet50 fine-tuned | 91.0% | not run: not selected | — | — | — |"


def _with_lite0(results):
    results["models"]["efficientnet_lite0_head"] = {**_model(0.8, 1000), "backbone": "efficientnet_lite0",
                                                    "weights": "imagenet", "weights_source": "pip package X"}
    results["models"]["efficientnet_lite0_finetuned"] = {**_model(0.9, 2000), "backbone": "efficientnet_lite0",
                                                         "weights": "imagenet", "weights_source": "pip package X",
                                                         "finetune_layers": 46, "finetune_lr": 1e-4}
    results["best_model"] = "efficientnet_lite0_finetuned"
    return results


def test_other_backbones_get_rows_after_the_studys_without_a_study_number(results):
    lines = report.results_table_markdown(_with_lite0(results)).splitlines()
    assert lines[5] == "| EfficientNet-Lite0 head-only | — | 80.0% | 1 seed | — | 41 |"
    assert lines[6] == "| EfficientNet-Lite0 fine-tuned | — | 90.0% | 1 seed | — | 41 + 41 |"  # stage 2 + head
    curves = {"points": [{"model": m, "train_size": n, "seed": s, "test_accuracy": a}
                         for m, base in (("cnn", 0.6), ("efficientnet_lite0_head", 0.8))
                         for n in (500, 10000) for s, a in zip((3, 4, 5), (base, base + 0.01, base + 0.02))]}
    with_seeds = report.results_table_markdown(results, curves).splitlines()
    assert with_seeds[2] == "| Baseline CNN | 60.5% | 61.2% | 61.0% ± 1.0 (3 seeds) | +0.7 | 41 |"
    assert with_seeds[5] == "| EfficientNet-Lite0 head-only | — | 80.0% | 81.0% ± 1.0 (3 seeds) | — | 41 |"
    assert with_seeds[6] == "| EfficientNet-Lite0 fine-tuned | — | 90.0% | 1 seed | — | 41 + 41 |"
    results["config"]["test_time_flip"] = True  # this run also saw mirrors, the curves one view
    flipped = report.results_table_markdown(results, curves).splitlines()
    assert flipped[0].endswith("| Difference (points) | With mirror | Training seconds, mean over seeds "
                               "(fine-tuned: stage 2 + head) |")
    assert flipped[2] == "| Baseline CNN | 60.5% | 61.2% | 61.0% ± 1.0 (3 seeds) | +0.7 | — | 41 |"
    curves["config"] = {"test_time_flip": True}
    assert report.results_table_markdown(results, curves).splitlines()[2] == (
        "| Baseline CNN | 60.5% | 61.2% | 61.0% ± 1.0 (3 seeds, with the mirror) | +0.7 | — | 41 |")
    results["config"]["test_time_flip"] = False
    assert "weights: imagenet (EfficientNet-Lite0: pip package X)" in lines[-1]
    fig = plots.model_comparison(results)
    checked, outlined, this_run = fig.axes[0].containers
    assert [p.get_height() for p in checked + outlined] == [0.605, 0.887, 0.910]
    assert [p.get_height() for p in this_run] == [0.6123, 0.8812, 0.8, 0.9]
    sentences = report.findings(results)
    assert sentences[0] == "Best model: EfficientNet-Lite0 fine-tuned with 90.0% test accuracy."
    # 95% interval: 1.96 * sqrt((0.9 * 0.1 + 0.6123 * 0.3877) / 10,000) = 1.1 points either side
    assert ("EfficientNet-Lite0 fine-tuned vs the baseline CNN: +28.8 points (90.0% vs 61.2%; 95% interval +27.6 "
            "to +29.9, test-set error only, one seed), for 83 s of training (both stages) against 41 s (2x).") \
        in sentences


def test_the_resnet_from_scratch_gets_its_row_after_the_studys_and_is_compared_with_the_cnn(results, tmp_path):
    results["models"]["scratch"] = {**_model(0.8, 414074), "seconds": 900.0,
                                    "recipe": {"width": 16, "learning_rate": 0.05}}
    lines = report.results_table_markdown(results).splitlines()
    assert lines[2].startswith("| Baseline CNN |") and lines[4].startswith("| ResNet50 fine-tuned |")
    assert lines[5] == "| ResNet from scratch (strong baseline) | — | 80.0% | 1 seed | — | 900 |"
    assert ("ResNet from scratch (strong baseline) vs the baseline CNN: +18.8 points (80.0% vs 61.2%; 95% interval "
            "+17.5 to +20.0, test-set error only, one seed), for 900 s of training against 41 s (22x).") \
        in report.findings(results)
    assert ("ResNet50 head-only vs the ResNet from scratch: +8.1 points (88.1% vs 80.0%; 95% interval +7.1 to "
            "+9.1, test-set error only, one seed), for 41 s of training against 900 s (0.046x).") \
        in report.findings(results)
    this_run = plots.model_comparison(results).axes[0].containers[-1]  # after the study's bars
    assert [p.get_height() for p in this_run] == [0.6123, 0.8812, 0.8]
    from cifar10_transfer.figures import training_curve

    assert training_curve("scratch").file == "scratch_curve.png"
    _, text = _deck_text(deck.render_deck(results, tmp_path / "no-images", tmp_path / "deck.pdf"))
    flat = " ".join(text.split())
    assert "Strong baseline: a ResNet from scratch" in flat
    assert "a stem of 16 channels, stages of 32, 64 and 128" in flat
    assert "ResNet from scratch (strong baseline): 80.0% in 900 s" in flat
    assert ("The ResNet from scratch: 80.0%, +18.8 points (95% interval +17.5 to +20.0) over the baseline CNN, "
            "single views, in 900 s of training.") in flat
    # the headline measures transfer against the strong baseline first, then against the study's CNN
    assert takeaways.title(results).startswith("ImageNet pre-training, ResNet50 head-only: vs the ResNet from "
                                               "scratch: +8.1 points (95% interval ")


def test_the_choices_takeaway_names_the_widest_seed_spread_of_validation_accuracy(results):
    assert takeaways.choices(results).endswith("this run is one seed, so its gaps of about a point may be noise.")
    results["models"]["cnn"]["over_seeds"] = {"val_accuracy": {"sd": 0.015}}
    results["models"]["resnet50_head"]["over_seeds"] = {"val_accuracy": {"sd": 0.004}}
    assert takeaways.choices(results).endswith(
        ": seeds alone move Baseline CNN's validation accuracy by 1.50 points (sd), so one run's gap of that size "
        "is noise.")


def test_the_eda_takeaways_are_notebook_01s_findings_where_its_summary_is_given(results, tmp_path):
    assert takeaways.labels(results) == "Balanced classes: each seed draws its 8,000 training images stratified, " \
                                        "800 per class."
    eda = {"classes": {}, "findings": {"size": "50,000 training images; the training set is perfectly balanced.",
                                       "colour": "ship images are the most blue-tinted."}}
    assert takeaways.labels(results, eda=eda) == ("50,000 training images; the training set is perfectly balanced. "
                                                  "Each seed draws its 8,000 training images stratified, 800 per "
                                                  "class.")
    assert takeaways.colours(results, eda=eda) == "ship images are the most blue-tinted."
    _, text = _deck_text(deck.render_deck(results, tmp_path / "no-images", tmp_path / "deck.pdf", eda=eda))
    assert "ship images are the most blue-tinted." in " ".join(text.split())


def test_update_readme_replaces_only_the_marked_block(results, tmp_path):
    readme = tmp_path / "README.md"
    before = "# Title\n\nIntro.\n\n"
    after = "\n\n## Usage\n\nMore text.\n"
    readme.write_text(before + report.README_START + "\nold table\n" + report.README_END + after)
    report.update_readme(readme, results)
    text = readme.read_text()
    assert text.startswith(before + report.README_START + "\n| Model |")
    assert text.endswith(report.README_END + after)
    assert "old table" not in text
    assert report.readme_table_matches(text, results)
    report.update_readme(readme, results)  # idempotent
    assert readme.read_text() == text
    results["models"]["cnn"]["test_accuracy"] = 0.7
    assert not report.readme_table_matches(text, results)


def test_update_readme_without_markers_raises(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n" + report.README_END + "\n")
    with pytest.raises(UserError, match="results:start"):
        report.update_readme(readme, results)
    assert readme.read_text() == "# Title\n" + report.README_END + "\n"
    assert not report.readme_table_matches("# Title\n", results)


def test_findings_are_computed(results):
    sentences = report.findings(results)
    assert sentences[0] == "Best model: ResNet50 head-only with 88.1% test accuracy."
    assert "ResNet50 head-only: 88.1% here vs 88.7% in the study (-0.6 points), both single views." in sentences
    assert ("ResNet50 head-only vs the baseline CNN: +26.9 points (88.1% vs 61.2%; 95% interval +25.7 to +28.0, "
            "test-set error only, one seed), for 41 s of training against 41 s (1x).") in sentences
    assert any("cat predicted as dog, 212 times (21.2% of 1,000 test cat images)" in s for s in sentences)
    assert any(s.startswith("Weakest class (ResNet50 head-only): cat (F1 0.44") for s in sentences)
    empty = copy.deepcopy(results)
    empty["models"] = {}
    assert report.findings(empty) == ["No model finished in this run, so there is nothing to compare yet."]


def test_test_time_flip_is_stated_and_its_change_computed_per_stage(results, tmp_path):
    single = report.results_table_markdown(results).splitlines()[-1]
    assert "single view per test image" in single and "mirror" not in single
    assert not any("mirror" in s for s in report.findings(results))
    results["config"]["test_time_flip"] = True
    results["models"]["cnn"]["test_time_flip"] = {"val_accuracy": 0.6201, "single_view_val_accuracy": 0.6049,
                                                  "single_view_test_accuracy": 0.6012}
    results["models"]["resnet50_head"]["test_time_flip"] = {
        "val_accuracy": 0.889, "single_view_val_accuracy": 0.8851, "single_view_test_accuracy": 0.8791}
    table = report.results_table_markdown(results).splitlines()
    assert "test-time flip: each image's probabilities averaged with its mirror image's" in (
        table[-1].replace("\\", ""))
    # the study's single views beside this run's single views; the mirror in a column of its own
    assert table[2] == "| Baseline CNN | 60.5% | 60.1% | 1 seed | -0.4 | 61.2% | 41 |"
    sentences = report.findings(results)
    assert ("One view → with the mirror, validation | test: Baseline CNN: 60.5% → 62.0% | 60.1% → 61.2%; "
            "ResNet50 head-only: 88.5% → 88.9% | 87.9% → 88.1%.") in sentences
    assert any(s.startswith("Accuracies and differences here are single views, as the study's") for s in sentences)
    assert "Best model: ResNet50 head-only with 87.9% single-view (88.1% with the mirror) test accuracy." in sentences
    assert any(s.startswith("ResNet50 head-only vs the baseline CNN: +27.8 points (87.9% vs 60.1%") for s in sentences)
    # the confusions and per-class scores come from the evaluated view: the mirror's, and they say so
    assert any(s.startswith("Most common mistake (ResNet50 head-only, mirror-averaged): ") for s in sentences)
    assert any(s.startswith("Weakest class (ResNet50 head-only, mirror-averaged): ") for s in sentences)
    _, text = _deck_text(deck.render_deck(results, tmp_path / "no-images", tmp_path / "deck.pdf"))
    text = " ".join(text.split())
    assert "one view per image (single view), as the study measured" in text
    assert "averaged with its mirror image's is shown apart" in text


def _deck_text(path) -> tuple[int, str]:
    reader = pypdf.PdfReader(path)
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def test_render_deck(arrays, results, tmp_path):
    images_dir = tmp_path / "images"
    _, labels = arrays
    plots.save_figure(plots.label_distribution(labels, CLASSES), images_dir / "train_label_distribution.png")
    plots.save_figure(plots.training_curves(results["models"]["cnn"]["history"], "CNN"), images_dir / "cnn_curve.png")
    first = deck.render_deck(results, images_dir, tmp_path / "deck" / "deck.pdf")
    pages, text = _deck_text(first)
    assert pages >= 12
    for accuracy in ("61.2%", "88.1%", "60.5%", "88.7%", "91.0%"):
        assert accuracy in text
    assert "not run: ImageNet weights unavailable offline" in text.replace("\n", " ")
    assert "figure not produced in this run" in text  # e.g. dataset_samples.png is missing
    assert "Data is the CIFAR-10 JPEG copy" in text
    assert "changes accuracy is not measured here" in text.replace("\n", " ")
    assert "abc1234" in text
    second = deck.render_deck(results, images_dir, tmp_path / "again.pdf")
    assert first.read_bytes() == second.read_bytes()
    # every slide carries a takeaway computed from the results, on its own page
    pages = [" ".join(page.extract_text().split()) for page in pypdf.PdfReader(first).pages]
    takeaways = [takeaway for *_, takeaway in deck._slides(results, images_dir)]
    assert [title for (title, _, takeaway) in deck._slides(results, images_dir) if not takeaway] == []
    assert all(" ".join(t.split()) in page for t, page in zip(takeaways, pages))
    assert "The study's CNN, rebuilt: 61.2% against the study's 60.5% (+0.7 points), single views." in takeaways
    assert "Strong baseline" not in text  # its slide only where the run trained it
    assert sorted(p.name for p in (tmp_path / "deck").iterdir()) == ["deck.pdf"]


def test_render_deck_cnn_only_with_random_weights(results, tmp_path):
    results["models"] = {"cnn": results["models"]["cnn"]}
    results["not_run"] = {"resnet50_head": "weights=none chosen", "resnet50_finetuned": "weights=none chosen"}
    results["provenance"]["weights"] = "none"
    pages, text = _deck_text(deck.render_deck(results, tmp_path / "no-images", tmp_path / "deck.pdf"))
    flat = " ".join(text.split())
    assert pages >= 12
    assert "61.2%" in flat
    assert "NOT transfer learning" in flat
    assert "ResNet50 head-only not run: weights=none chosen" in flat
    assert "Finished 2026-11-29 02:14 UTC" in flat and "instruction sets" not in flat  # none recorded then
    results["provenance"]["cpu_isa"] = ["avx2", "fma"]
    _, text = _deck_text(deck.render_deck(results, tmp_path / "no-images", tmp_path / "deck.pdf"))
    assert "AMD EPYC, 2 cores, 23 GiB; instruction sets: avx2, fma" in " ".join(text.split())


def test_render_deck_with_a_second_backbone(results, tmp_path):
    pages, text = _deck_text(deck.render_deck(_with_lite0(results), tmp_path / "no-images", tmp_path / "deck.pdf"))
    flat = " ".join(text.split())
    assert "EfficientNet-Lite0 fine-tuned: 90.0%" in flat and "last 46 layers at learning rate 0.0001" in flat
    assert "EfficientNet-Lite0 head-only: 80.0%" in flat


def test_the_stage_two_recipe_in_words_follows_its_depth():
    entry = {"finetune_layers": 107, "finetune_lr": 1e-4, "finetune_views": 0, "finetune_schedule": "cosine",
             "finetune_label_smoothing": 0.1}
    partial = deck._stage2_recipe("efficientnet_lite0_finetuned", entry)
    assert partial.startswith("EfficientNet-Lite0: last 107 layers at learning rate 0.0001")
    assert partial.endswith("online; validation and test through the cached frozen prefix")
    for layers in (140, 141):  # nothing frozen after the input: there is no prefix to cache
        whole = deck._stage2_recipe("efficientnet_lite0_finetuned", {**entry, "finetune_layers": layers})
        assert whole.startswith("EfficientNet-Lite0: all 140 layers after the input at learning rate 0.0001")
        assert whole.endswith("online: the whole backbone every step")
    cached = deck._stage2_recipe("resnet50_finetuned", {**entry, "finetune_layers": 30, "finetune_views": 2})
    assert cached.startswith("ResNet50: last 30 layers") and cached.endswith("2 augmented copies per image")
    assert "BatchNorm" not in partial
    trained = deck._stage2_recipe("efficientnet_lite0_finetuned", {**entry, "finetune_batchnorm": "train"})
    assert "cosine decay to near 0, label smoothing 0.1, BatchNorm trained; online" in trained
    assert "stochastic depth" not in trained
    dropped = deck._stage2_recipe("efficientnet_lite0_finetuned", {**entry, "finetune_drop_path": 0.2})
    assert "cosine decay to near 0, label smoothing 0.1, stochastic depth 0.2; online" in dropped


def test_limitations_spread_what_the_curves_cover_and_ask_seeds_for_the_rest(results):
    lite0 = _with_lite0(results)  # CNN, ResNet50 head, EfficientNet-Lite0 head and fine-tuned
    assert ("Next: repeat Baseline CNN, ResNet50 head-only, EfficientNet-Lite0 head-only and EfficientNet-Lite0 "
            "fine-tuned with several seeds and report the spread.") in deck._limitations(lite0)
    curves = {"points": [{"model": m, "train_size": 10000, "seed": s, "test_accuracy": 0.7}
                         for m in ("cnn", "efficientnet_lite0_head") for s in (3, 4, 5)]}
    items = deck._limitations(lite0, curves)
    assert ("The 'Over seeds' column gives the spread of Baseline CNN and EfficientNet-Lite0 head-only over the "
            "learning curves' seeds at this size.") in items
    assert [s for s in items if s.startswith("Next: repeat")] == [
        "Next: repeat ResNet50 head-only and EfficientNet-Lite0 fine-tuned with several seeds and report the spread."]


def _over_seeds(results: dict, name: str, accuracies: tuple) -> None:
    """Stage `name` as trained under seeds 3, 4 and 5, with these validation and test accuracies."""
    from cifar10_transfer.results import combine_seeds

    params = results["models"][name]["params"]
    results["models"][name] = combine_seeds({seed: {**_model(accuracy, params), "eval_seconds": 2.0}
                                             for seed, accuracy in zip((3, 4, 5), accuracies)})


def test_stages_over_seeds_show_mean_sd_and_confidence_interval_in_table_findings_and_deck(results, tmp_path):
    single_view = report.results_table_markdown(results).splitlines()
    results["config"]["seeds"] = "3,4,5"
    _over_seeds(results, "cnn", (0.60, 0.62, 0.64))
    _over_seeds(results, "resnet50_head", (0.87, 0.88, 0.90))
    curves = {"points": [{"model": "cnn", "train_size": 10000, "seed": s, "test_accuracy": 0.7} for s in (3, 4, 5)]}
    lines = report.results_table_markdown(results, curves).splitlines()  # this run's seeds, not the curves'
    # 0.62 ± 0.02: t(0.975, 2) = 4.303 times 0.02 / sqrt(3) = 0.0497 either side
    assert lines[2] == "| Baseline CNN | 60.5% | 62.0% | 62.0% ± 2.0 (95% CI 57.0–67.0, 3 seeds) | +1.5 | 41 |"
    assert lines[3] == ("| ResNet50 head-only | 88.7% | 88.3% | 88.3% ± 1.5 (95% CI 84.5–92.1, 3 seeds) "
                        "| -0.4 | 41 |")
    assert lines[4] == single_view[4]  # the fine-tuned stage did not run
    sentences = report.findings(results)
    assert sentences[0] == "Best model: ResNet50 head-only with 88.3% test accuracy (the mean of 3 seeds)."
    assert ("The mistakes and classes below are those of ResNet50 head-only's run with the median validation "
            "accuracy (seed 4).") in sentences
    items = deck._limitations(results, curves)
    assert ("On 8,000 training images, Baseline CNN and ResNet50 head-only under seeds 3, 4, 5: 'This run' is each "
            "stage's mean, 'Over seeds' adds the standard deviation and the 95% confidence interval of the "
            "mean.") in items
    assert not [item for item in items if "one seed" in item or "Over seeds' column" in item or "repeat" in item]
    _, text = _deck_text(deck.render_deck(results, tmp_path / "no-images", tmp_path / "deck.pdf"))
    text = " ".join(text.split())
    assert "Best on validation: ResNet50 head-only, 88.3% test accuracy (single view, mean of 3 seeds)" in text
    assert "seeds 3, 4, 5." in text and "62.0% ± 2.0 (95% CI 57.0–67.0, 3 seeds)" in text
    assert "Seed spread of single-view validation accuracy (sd, points): Baseline CNN" in text
    comparison = plots.model_comparison(results).axes[0]
    bars = [c for c in comparison.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1 and "± sd over seeds" in comparison.get_legend_handles_labels()[1][-1]
    cost = plots.accuracy_vs_cost(results).axes[0]
    points = [line.get_xydata()[0].tolist() for line in cost.lines if line.get_marker() == "o"]
    cnn, head = results["models"]["cnn"], results["models"]["resnet50_head"]
    assert points == [[cnn["seconds"], 0.62], [head["seconds"], pytest.approx((0.87 + 0.88 + 0.90) / 3)]]
    assert cost.get_xscale() == "log" and "error bars: sd over seeds" in cost.get_title()


# Run in a fresh interpreter where importing TensorFlow or Keras fails: the publish wing must not need them.
WITHOUT_TENSORFLOW = """
import importlib.abc, sys
from pathlib import Path

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError(f"{name} is refused: the publish wing must not import it")

sys.meta_path.insert(0, Refuse())
from cifar10_transfer import deck, report
from cifar10_transfer.results import CURVES_FILE, EDA_FILE, RESULTS_FILE, load_curves, load_eda, load_results

root, pdf = Path(sys.argv[1]), Path(sys.argv[2])
results, curves = load_results(root / RESULTS_FILE), load_curves(root / CURVES_FILE)
eda = load_eda(root / EDA_FILE)
readme = (root / "README.md").read_text()
print(report.readme_table_matches(readme, results, curves), report.readme_curves_match(readme, curves))
deck.render_deck(results, root / "images", pdf, curves, eda)
print(sorted(name for name in sys.modules if name.split(".")[0] == "cifar10_transfer"))
"""
# The run wing: what trains, evaluates and writes results; rendering must not import any of it.
RUN_WING = {"backbones", "cache", "cache_index", "config", "curves", "custom_layers", "data", "efficientnet_lite",
            "execution", "models", "pipelines", "predict", "provenance", "runs", "stages", "training", "weights",
            "workflow"}


def test_readme_blocks_and_deck_render_from_the_committed_results_without_tensorflow_or_the_run_wing(tmp_path):
    from cifar10_transfer.workflow import DECK_NAME

    pdf = tmp_path / "deck.pdf"
    probe = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, str(ROOT), str(pdf)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    matches, modules = probe.stdout.splitlines()
    assert matches == "True True"  # the README's results and curves blocks are what these files render to
    imported = {name.split(".")[1] for name in ast.literal_eval(modules) if "." in name}
    assert imported >= {"deck", "report", "results"} and not imported & RUN_WING, imported
    assert pdf.read_bytes() == (ROOT / "presentation" / DECK_NAME).read_bytes()


def test_report_redraws_the_committed_results_figures_deck_and_readme_byte_for_byte(tmp_path):
    from cifar10_transfer.figures import save_results_figures
    from cifar10_transfer.workflow import DECK_NAME, report as run_report

    shutil.copytree(ROOT / "results", tmp_path / "results")
    shutil.copytree(ROOT / "images", tmp_path / "images")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    for path in save_results_figures(load_results(ROOT / "results" / "results.json"), tmp_path / "images"):
        path.unlink()  # report must draw these again, not keep the copies
    run_report(tmp_path)
    same = sorted(p.name for p in (tmp_path / "images").iterdir()
                  if p.read_bytes() == (ROOT / "images" / p.name).read_bytes())
    assert same == sorted(p.name for p in (ROOT / "images").iterdir())
    assert (tmp_path / "README.md").read_text() == (ROOT / "README.md").read_text()
    assert (tmp_path / "presentation" / DECK_NAME).read_bytes() == (ROOT / "presentation" / DECK_NAME).read_bytes()


def test_the_weights_line_names_the_package_version_and_the_files_checksum(results):
    results = _with_lite0(results)
    for name in ("efficientnet_lite0_head", "efficientnet_lite0_finetuned"):
        results["models"][name].update(weights_package="X==0.1.0", weights_file="lite0.pth", weights_sha256="ab" * 32)
    assert report.weights_description(results) == ("imagenet (EfficientNet-Lite0: pip package X 0.1.0, lite0.pth "
                                                   "sha256 abababababab…)")


def test_the_cost_axis_labels_seconds_as_plain_numbers(results):
    results["models"]["resnet50_head"]["seconds"] = 4000.0
    fig = plots.accuracy_vs_cost(results)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert "100" in labels and "1,000" in labels and not [label for label in labels if "10^" in label]


def test_the_best_model_is_the_one_validation_picks_whatever_the_file_stored(results):
    results["models"]["cnn"]["val_accuracy"] = 0.95  # below the head on test, above it on validation
    assert results["best_model"] == "resnet50_head"
    sentences = report.findings(results)
    assert sentences[0] == "Best model: Baseline CNN with 61.2% test accuracy."
    assert any(s.startswith("Most common mistake (Baseline CNN)") for s in sentences)


def test_the_limitations_slide_names_the_seeds_each_group_of_stages_ran_under():
    runs = lambda *seeds: {"runs": [{"seed": s} for s in seeds]}  # noqa: E731
    results = {"provenance": {"data": "CIFAR-10 (JPEG copy)", "weights": "imagenet"}, "profile": "seed",
               "config": {"seeds": "3,4,5,6,7"}, "data": {"train": 8000}, "not_run": {},
               "models": {"cnn": runs(3, 4, 5, 6, 7), "scratch": runs(3, 4, 5),
                          "efficientnet_lite0_head": runs(3, 4, 5, 6, 7)}}
    items = deck._limitations(results)
    assert ("On 8,000 training images, Baseline CNN and EfficientNet-Lite0 head-only under seeds 3, 4, 5, 6, 7; "
            "ResNet from scratch (strong baseline) under seeds 3, 4, 5: 'This run' is each stage's "
            "mean") in " ".join(items)
