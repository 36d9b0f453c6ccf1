"""From predicted probabilities to metrics, and a finished stage's evaluation kept on disk.

Metrics are accuracy, loss, per-class scores and confusions. A stage's kept evaluation spares a
resumed or repeated run predicting it again.

No plotting here: `plots` draws what these functions return.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

from .provenance import code_fingerprint, decisive_settings
from .publish import atomic_write

TOP_CONFUSIONS = 10
EVALUATION_FILE = "evaluation.npz"  # in a stage's directory: its test probabilities, view details and seconds


def evaluation_key(config: dict, weights_sha256: str, *images: np.ndarray) -> str:
    """What decides a stage's evaluation: its settings (`decisive_settings`: not which other stages,
    seeds or curve points run), its weights, the images it predicts and the code."""
    digest = hashlib.sha256(decisive_settings(config).encode() + weights_sha256.encode())
    for array in images:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest() + code_fingerprint()[:16]


def evaluate_once(stage_dir: Path, key: str, evaluate) -> tuple[np.ndarray, dict, float]:
    """`evaluate()`'s (test probabilities, view details) and the seconds it took, computed once per `key`
    (`evaluation_key`): a stage loaded by a resumed or repeated run reads them from `stage_dir`, as
    evaluated when it was trained. A missing file, or one of another key, is computed anew; so is a
    damaged one, with one line."""
    path = Path(stage_dir) / EVALUATION_FILE
    try:
        with np.load(path) as kept:
            if str(kept["key"]) == key:
                return kept["probabilities"], json.loads(str(kept["details"])), float(kept["seconds"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        print(f"{path.parent.name}: evaluating again; {path} is damaged ({type(exc).__name__})", flush=True)
    started = time.perf_counter()
    probabilities, details = evaluate()
    seconds = time.perf_counter() - started

    def save(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, key=key, probabilities=probabilities, details=json.dumps(details), seconds=seconds)

    atomic_write(path, save)
    return probabilities, details, seconds


def evaluate_predictions(y_true: np.ndarray, probabilities: np.ndarray,
                         class_names: tuple[str, ...]) -> dict:
    """Test metrics of one model, as JSON-ready values.

    Accuracy and loss are fractions (not percent); the loss is the mean sparse
    categorical cross-entropy, the quantity Keras reports as `loss`.
    """
    labels = np.arange(len(class_names))
    probabilities = probabilities.astype(np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 only within rounding
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=labels, zero_division=0)
    matrix = confusion_matrix(y_true, predicted, labels=labels)
    return {
        "test_accuracy": float(np.mean(predicted == y_true)),
        "test_loss": float(log_loss(y_true, probabilities, labels=labels)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(class_names)},
        "confusion_matrix": matrix.tolist(),
        "top_confusions": top_confusions(matrix, class_names),
    }


def view_probabilities(predict_view, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities as evaluated, single-view probabilities) of a set of images.

    `predict_view(mirrored)` gives a model's class probabilities of the images (False) or of
    their mirror images (True). With `flip` (test-time flip) the evaluated probabilities are
    the mean of both views; otherwise they are the single view's.
    """
    single = predict_view(False)
    return ((single + predict_view(True)) / 2 if flip else single), single


def top_confusions(matrix: np.ndarray, class_names: tuple[str, ...], limit: int = TOP_CONFUSIONS) -> list[dict]:
    """The most frequent true -> predicted mistakes, largest first (ties by class order)."""
    off_diagonal = np.array(matrix, dtype=np.int64)
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")[:limit]
    pairs = [np.unravel_index(index, off_diagonal.shape) for index in order]
    return [{"true": class_names[t], "predicted": class_names[p], "count": int(off_diagonal[t, p])}
            for t, p in pairs if off_diagonal[t, p] > 0]


def most_confident_mistakes(y_true: np.ndarray, probabilities: np.ndarray, limit: int = 16) -> np.ndarray:
    """Indices of misclassified examples, the most confidently wrong first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]
