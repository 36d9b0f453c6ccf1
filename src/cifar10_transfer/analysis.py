"""Which figure each notebook section writes, and the tables it shows.

The notebooks call these so that every figure has one name, one style and one code
path that the tests exercise.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import plots
from .data import Dataset
from .evaluation import most_confident_mistakes
from .study import stage

if TYPE_CHECKING:  # pipelines loads TensorFlow, which the EDA notebook does not need
    from .pipelines import Splits


def save_eda_figures(dataset: Dataset, images_dir: Path, seed: int = 0) -> list[Path]:
    """The four EDA figures of the training set, written to `images_dir`."""
    images_dir = Path(images_dir)
    x, y, names = dataset.x_train, dataset.y_train, dataset.class_names
    figures = {"train_label_distribution.png": plots.label_distribution(y, names),
               "dataset_samples.png": plots.sample_grid(x, y, names, per_class=8, seed=seed),
               "avg_rgb_by_class.png": plots.average_rgb_by_class(x, y, names),
               "pixel_intensity.png": plots.pixel_intensity(x, y, names)}
    return [_save(figure, images_dir / name) for name, figure in figures.items()]


def save_augmentation_figure(splits: Splits, images_dir: Path, seed: int, n_images: int = 6,
                             n_variants: int = 5) -> list[Path]:
    """Training images of different classes beside augmented copies (the backbone stages' augmentation)."""
    from .pipelines import augmentation_examples

    first_of_class = [np.flatnonzero(splits.y_train == label)[0] for label in np.unique(splits.y_train)]
    originals = splits.x_train[first_of_class[:n_images]]  # one image per class, not six of the first class
    variants = augmentation_examples(originals, n_variants, seed)
    return [_save(plots.augmentation_grid(originals, variants), Path(images_dir) / "augmentation.png")]


def save_training_curves(runs, images_dir: Path) -> list[Path]:
    """Loss and accuracy curves of each trained run (a run or a list of them; None is skipped)."""
    runs = runs if isinstance(runs, list) else [runs]
    return [_save(plots.training_curves(run.stage.history, f"{stage(run.name).label}: training and validation"),
                  Path(images_dir) / stage(run.name).curve_file) for run in runs if run is not None]


def show(paths: list[Path]) -> None:
    """Display saved figures in a notebook, each under its file name."""
    from IPython.display import Image, Markdown, display

    for path in paths:
        display(Markdown(f"`{Path(path).name}`"), Image(filename=str(path)))


def bullets(lines: list[str]) -> str:
    """Sentences as a Markdown bullet list, for a notebook's computed narrative."""
    return "\n".join(f"- {line}" for line in lines)


def metrics_frame(results: dict) -> pd.DataFrame:
    """One row per trained model: accuracy, loss, size and cost (accuracies as fractions)."""
    columns = ["test_accuracy", "test_loss", "train_accuracy", "val_accuracy", "params",
               "trainable_params", "epochs", "seconds", "images_per_second", "precision"]
    return pd.DataFrame({name: {c: entry[c] for c in columns} for name, entry in results["models"].items()}).T


def save_evaluation_figures(results: dict, splits: Splits, best_probabilities: np.ndarray,
                            images_dir: Path) -> list[Path]:
    """Comparison, confusion matrix, common errors, per-class metrics and misclassified examples.

    Everything but the comparison describes the best model of the run.
    """
    images_dir = Path(images_dir)
    best = results["models"][results["best_model"]]
    label = stage(results["best_model"]).label
    wrong = most_confident_mistakes(splits.y_test, best_probabilities)
    predicted = best_probabilities.argmax(axis=1)
    figures = {
        "model_comparison.png": plots.model_comparison(results),
        "confusion_matrix.png": plots.confusion_matrix_plot(np.array(best["confusion_matrix"]),
                                                            splits.class_names, f"{label}: confusion matrix"),
        "common_errors.png": plots.common_errors(best["top_confusions"], f"{label}: most common errors"),
        "per_class_metrics.png": plots.per_class_metrics(best["per_class"], f"{label}: per-class metrics"),
        "misclassified_examples.png": plots.misclassified_examples(
            splits.x_test[wrong], splits.y_test[wrong], predicted[wrong],
            best_probabilities[wrong, predicted[wrong]], splits.class_names),
    }
    return [_save(figure, images_dir / name) for name, figure in figures.items()]


def _save(figure, path: Path) -> Path:
    plots.save_figure(figure, path)
    return path
