"""The figure table: each figure's file under images/, the function that draws it and its caption."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from matplotlib.figure import Figure

from . import plots
from .curve_report import learning_curve_figure, resolution_cost_figure
from .study import stage

IMAGES_DIR = "images"  # beside results/ in a run's directory


@dataclass(frozen=True)
class FigureFile:
    """One figure: its file's name without .png, what draws it, and a caption for slides and notebooks."""

    name: str
    draw: Callable[..., Figure]
    caption: str

    @property
    def file(self) -> str:
        return f"{self.name}.png"

    def markdown(self) -> str:
        """The figure as the README embeds it, its name in words as the alt text."""
        return f"![{self.name.replace('_', ' ')}]({IMAGES_DIR}/{self.file})"

    def save(self, images_dir: str | os.PathLike, *args, **kwargs) -> Path:
        """Draw the figure from `args` and write it into `images_dir`."""
        return plots.save_figure(self.draw(*args, **kwargs), Path(images_dir) / self.file)


FIGURES = {figure.name: figure for figure in (
    FigureFile("train_label_distribution", plots.label_distribution, "Training images per class"),
    FigureFile("dataset_samples", plots.sample_grid, "Randomly drawn training images of every class"),
    FigureFile("avg_rgb_by_class", plots.average_rgb_by_class, "Mean red, green and blue value of each class"),
    FigureFile("pixel_intensity", plots.pixel_intensity, "How pixel values spread, per class and channel"),
    FigureFile("augmentation", plots.augmentation_grid, "Training images beside augmented copies"),
    FigureFile("model_comparison", plots.model_comparison, "Test accuracy of each stage beside the study's"),
    FigureFile("accuracy_vs_cost", plots.accuracy_vs_cost, "Accuracy versus training cost"),
    FigureFile("confusion_matrix", plots.confusion_matrix_plot, "The best model's confusion matrix"),
    FigureFile("common_errors", plots.common_errors, "The best model's most common mistakes"),
    FigureFile("per_class_metrics", plots.per_class_metrics, "The best model's precision, recall and F1 per class"),
    FigureFile("misclassified_examples", plots.misclassified_examples, "The best model's most confident mistakes"),
    FigureFile("learning_curve", learning_curve_figure, "How much labelled data transfer learning saves"),
    FigureFile("resolution_cost", resolution_cost_figure, "Input resolution versus cost"),
)}


def training_curve(name: str) -> FigureFile:
    """The loss and accuracy curves of stage `name`, in the file the study table names (e.g. resnet_head.png)."""
    entry = stage(name)
    return FigureFile(Path(entry.curve_file).stem, plots.training_curves, f"{entry.label}: training and validation")


RUN_FIGURES = ("model_comparison", "accuracy_vs_cost")  # drawn from a whole results.json and nothing else


def save_results_figures(results: dict, images_dir: str | os.PathLike) -> list[Path]:
    """The figures drawn from results.json alone: RUN_FIGURES and each trained stage's training
    curves (its shown run's), so that `report` redraws them too."""
    paths = [FIGURES[name].save(images_dir, results) for name in RUN_FIGURES]
    for name, entry in results["models"].items():
        curve = training_curve(name)
        paths.append(curve.save(images_dir, entry["history"], curve.caption))
    return paths
