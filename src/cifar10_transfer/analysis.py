"""The notebooks' glue: the figures each section writes, the tables it shows and the EDA findings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import pandas as pd

from .evaluation import most_confident_mistakes
from .figures import FIGURES, RUN_FIGURES, training_curve
from .publish import write_atomic
from .results import best_model, predictions_words
from .study import stage

if TYPE_CHECKING:  # only their arrays are read here; pipelines would load TensorFlow, which notebook 01 does without
    from .data import Dataset
    from .pipelines import Splits


def save_eda_figures(dataset: Dataset, images_dir: str | os.PathLike, seed: int = 0) -> list[Path]:
    """The four EDA figures of the training set, written to `images_dir`."""
    x, y, names = dataset.x_train, dataset.y_train, dataset.class_names
    return [FIGURES["train_label_distribution"].save(images_dir, y, names),
            FIGURES["dataset_samples"].save(images_dir, x, y, names, per_class=8, seed=seed),
            FIGURES["avg_rgb_by_class"].save(images_dir, x, y, names),
            FIGURES["pixel_intensity"].save(images_dir, x, y, names)]


def augmentation_originals(splits: Splits, n_images: int = 6) -> np.ndarray:
    """One training image of each of the first `n_images` classes (not six of the first class)."""
    first_of_class = [np.flatnonzero(splits.y_train == label)[0] for label in np.unique(splits.y_train)]
    return splits.x_train[first_of_class[:n_images]]


def save_augmentation_figure(originals: np.ndarray, variants: np.ndarray, images_dir: str | os.PathLike) -> list[Path]:
    """`originals` beside their augmented `variants` (from `pipelines.augmentation_examples`)."""
    return [FIGURES["augmentation"].save(images_dir, originals, variants)]


def save_training_curves(runs, images_dir: str | os.PathLike) -> list[Path]:
    """Loss and accuracy curves of each trained run (a run or a list of them; None is skipped)."""
    curves = [(training_curve(run.name), run.stage.history) for run in (runs if isinstance(runs, list) else [runs])
              if run is not None]
    return [curve.save(images_dir, history, curve.caption) for curve, history in curves]


def save_evaluation_figures(results: dict, splits: Splits, best_probabilities: np.ndarray,
                            images_dir: str | os.PathLike) -> list[Path]:
    """Comparison, accuracy against cost, confusion matrix, common errors, per-class metrics and misclassified examples.

    Everything but the comparison describes the best model of the run (`results.best_model`).
    """
    name = best_model(results)
    best, label = results["models"][name], stage(name).label
    views = predictions_words(best)
    views = f"\n({views} predictions)" if views else ""  # a line of its own
    wrong = most_confident_mistakes(splits.y_test, best_probabilities)
    predicted = best_probabilities.argmax(axis=1)
    return [*(FIGURES[name].save(images_dir, results) for name in RUN_FIGURES),
            FIGURES["confusion_matrix"].save(images_dir, np.array(best["confusion_matrix"]), splits.class_names,
                                             f"{label}: confusion matrix{views}"),
            FIGURES["common_errors"].save(images_dir, best["top_confusions"], f"{label}: most common errors{views}"),
            FIGURES["per_class_metrics"].save(images_dir, best["per_class"], f"{label}: per-class metrics{views}"),
            FIGURES["misclassified_examples"].save(images_dir, splits.x_test[wrong], splits.y_test[wrong],
                                                   predicted[wrong], best_probabilities[wrong, predicted[wrong]],
                                                   splits.class_names,
                                                   f"{label}: the most confident mistakes (% = probability of "
                                                   f"the predicted class){views}")]


def save_curve_figures(curves: dict, images_dir: str | os.PathLike) -> list[Path]:
    """The learning curve and the resolution cost of notebook 03's `curves`."""
    return [FIGURES[name].save(images_dir, curves) for name in ("learning_curve", "resolution_cost")]


def show(paths: list[Path]) -> None:
    """Display saved figures in a notebook, each under its file name and caption."""
    from IPython.display import Image, Markdown, display

    for path in map(Path, paths):
        caption = f": {FIGURES[path.stem].caption}" if path.stem in FIGURES else ""
        display(Markdown(f"`{path.name}`{caption}"), Image(filename=str(path)))


def bullets(lines: Iterable[str]) -> str:
    """Sentences as a Markdown bullet list, for a notebook's computed narrative."""
    return "\n".join(f"- {line}" for line in lines)


def metrics_frame(results: dict) -> pd.DataFrame:
    """One row per trained model: accuracy, loss, size and cost as results.json holds them (accuracies as
    fractions; `seconds` is training, `eval_seconds` evaluation)."""
    columns = ["test_accuracy", "test_loss", "train_accuracy", "val_accuracy", "params",
               "trainable_params", "epochs", "seconds", "eval_seconds", "images_per_second", "precision"]
    return pd.DataFrame({name: {c: entry[c] for c in columns} for name, entry in results["models"].items()}).T


def class_table(dataset: Dataset) -> pd.DataFrame:
    """Per class: train and test counts, share of the training set, mean R, G, B and brightness (0-255)."""
    n_classes = len(dataset.class_names)
    train = np.bincount(dataset.y_train, minlength=n_classes)
    test = np.bincount(dataset.y_test, minlength=n_classes)
    means = np.stack([dataset.x_train[dataset.y_train == c].reshape(-1, 3).mean(axis=0)
                      for c in range(n_classes)])
    return pd.DataFrame({"train": train, "test": test, "train_share": train / train.sum(),
                         "mean_r": means[:, 0], "mean_g": means[:, 1], "mean_b": means[:, 2],
                         "brightness": means.mean(axis=1)},
                        index=pd.Index(dataset.class_names, name="class"))


def eda_findings(dataset: Dataset, table: pd.DataFrame) -> dict[str, str]:
    """Sentences for the EDA narrative (and the deck's EDA takeaways), every number computed from `dataset`
    and its `class_table`."""
    spread = table["train"].max() - table["train"].min()
    balance = ("perfectly balanced" if spread == 0
               else f"imbalanced by up to {spread:,} images between classes")
    blue_lead = (table["mean_b"] - table[["mean_r", "mean_g"]].mean(axis=1)).sort_values()
    return {
        "data": f"Data: {dataset.description}.",
        "size": f"{len(dataset.y_train):,} training and {len(dataset.y_test):,} test images of "
        f"{dataset.x_train.shape[1]}x{dataset.x_train.shape[2]} pixels in {len(dataset.class_names)} classes; "
        f"the training set is {balance}.",
        "brightness": f"The brightest class on average is {table['brightness'].idxmax()} "
        f"({table['brightness'].max():.1f} of 255), the darkest {table['brightness'].idxmin()} "
        f"({table['brightness'].min():.1f}).",
        "colour": f"{blue_lead.index[-1].capitalize()} images are the most blue-tinted (blue exceeds the red/green "
        f"mean by {blue_lead.iloc[-1]:.1f} of 255), {blue_lead.index[0]} the least ({blue_lead.iloc[0]:.1f}): colour alone "
        "carries some class signal, which a model can over-rely on.",
    }


def save_eda_summary(dataset: Dataset, path: str | os.PathLike) -> dict:
    """Write `path` (results/eda.json): the class table and the findings, which the deck's EDA slides read."""
    table = class_table(dataset)  # a pass over every training image: once for the table and the findings
    summary = {"data": dataset.description, "classes": table.to_dict(orient="index"),
               "findings": eda_findings(dataset, table)}
    write_atomic(path, json.dumps(summary, indent=2) + "\n")
    return summary
