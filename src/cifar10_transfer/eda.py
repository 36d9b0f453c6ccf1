"""Exploratory analysis of a dataset: the class table and findings computed from it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import Dataset


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


def eda_findings(dataset: Dataset) -> list[str]:
    """Sentences for the EDA narrative, every number computed from `dataset`."""
    table = class_table(dataset)
    spread = table["train"].max() - table["train"].min()
    balance = ("perfectly balanced" if spread == 0
               else f"imbalanced by up to {spread:,} images between classes")
    blue_lead = (table["mean_b"] - table[["mean_r", "mean_g"]].mean(axis=1)).sort_values()
    return [
        f"Data: {dataset.description}.",
        f"{len(dataset.y_train):,} training and {len(dataset.y_test):,} test images of "
        f"{dataset.x_train.shape[1]}x{dataset.x_train.shape[2]} pixels in {len(dataset.class_names)} classes; "
        f"the training set is {balance}.",
        f"The brightest class on average is {table['brightness'].idxmax()} "
        f"({table['brightness'].max():.1f} of 255), the darkest {table['brightness'].idxmin()} "
        f"({table['brightness'].min():.1f}).",
        f"{blue_lead.index[-1]} images are the most blue-tinted (blue exceeds the red/green mean by "
        f"{blue_lead.iloc[-1]:.1f}), {blue_lead.index[0]} the least ({blue_lead.iloc[0]:.1f}): colour alone "
        "carries some class signal, which a model can over-rely on.",
    ]
