"""Classify new images with a trained stage of a run.

Every stage a run trains is saved as `OUT/models/<stage>.keras`, beside a small JSON card
with what prediction needs: the class names, the input size, the backbone whose
preprocessing the model expects and whether the run evaluated with `test_time_flip`. An
image of any size or mode is decoded as in training (RGB, 32x32, like a CIFAR-10 image)
and then goes through the same `tf.data` pipeline as the test images, mirrored as well
where the run's test images were, so a prediction is made exactly as the run's test
accuracy was measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from .backbones import preprocess_for
from .custom_layers import StochasticDepth
from .data import IMAGE_SUFFIXES, read_image
from .errors import UserError
from .evaluation import view_probabilities
from .pipelines import cnn_dataset, transfer_dataset
from .publish import MODELS_DIR, atomic_write, file_sha256, write_atomic
from .results import RESULTS_FILE, best_model, load_results
from .training import predict

TOP_K = 3


def save_for_prediction(model, models_dir: Path, stage: str, class_names, image_size: int | None,
                        backbone: str | None, test_time_flip: bool = False) -> Path:
    """Save `model` as `<stage>.keras` with its card `<stage>.json` in `models_dir`;
    `test_time_flip` says that predictions average each image with its mirror image."""
    models_dir = Path(models_dir)
    path = atomic_write(models_dir / f"{stage}.keras", model.save)
    card = {"stage": stage, "class_names": list(class_names), "image_size": image_size, "backbone": backbone,
            "test_time_flip": test_time_flip, "sha256": file_sha256(path)}
    write_atomic(models_dir / f"{stage}.json", json.dumps(card, indent=2) + "\n")
    return path


@dataclass
class Prediction:
    """The top classes of one image, most probable first, or why it could not be read."""

    image: str
    top: list[tuple[str, float]]
    error: str | None = None


def image_files(paths: list[str | Path]) -> list[Path]:
    """The files named, with the images of each folder named (one level) in their place.

    A path that is missing or not an image stays in the list: it fails when decoded, and
    is reported there. An empty folder raises UserError.
    """
    files = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}); name image files or a "
                                "folder of them.")
            files += found
        else:
            files.append(path)
    return files


def load_stage(out: str | Path, stage: str | None = None):
    """(keras model, card) of `stage` in the run published under `out`; None: the run's best model."""
    out = Path(out)
    results = out / RESULTS_FILE
    if not results.is_file():
        raise UserError(f"{out} holds no run ({results} is missing); run `make reproduce` or "
                        "`python -m cifar10_transfer train --out DIR` first.")
    stage = stage or best_model(load_results(results))
    models_dir = out / MODELS_DIR
    card_path = models_dir / f"{stage}.json"
    if not card_path.is_file() or not (models_dir / f"{stage}.keras").is_file():
        saved = sorted(p.stem for p in models_dir.glob("*.json")) if models_dir.is_dir() else []
        raise UserError(f"the run in {out} has no saved model {stage!r} (saved: {', '.join(saved) or 'none'}); "
                        "train it with `python -m cifar10_transfer train` or `make reproduce`.")
    card = _read_card(card_path)
    return _load_model(models_dir / f"{stage}.keras", card.get("sha256")), card


def _read_card(path: Path) -> dict:
    """A model card, or UserError naming it when it is not one (empty, cut short, another file)."""
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"model card {path} is damaged ({type(exc).__name__}); train the stage again.") from None
    if not isinstance(card, dict) or not {"stage", "class_names", "image_size", "backbone"} <= card.keys():
        raise UserError(f"{path} is not a model card of this project; train the stage again.")
    return card


def _load_model(path: Path, sha256: str | None):
    """The saved model at `path`, its bytes checked against the card's digest (cards written before
    digests were recorded have none); UserError naming the file when it is damaged or foreign."""
    if sha256 is not None and file_sha256(path) != sha256:
        raise UserError(f"model file {path} is damaged (its digest differs from its card's); train the stage again.")
    try:
        return keras.saving.load_model(path, compile=False, custom_objects={"StochasticDepth": StochasticDepth})
    except Exception as exc:  # Keras fails in many ways on a file that is not one of its models
        raise UserError(f"{path} does not load as a Keras model ({type(exc).__name__}); "
                        "train the stage again.") from None


def _pipeline(images: np.ndarray, card: dict, mirrored: bool = False, batch_size: int = 32):
    labels = np.zeros(len(images), dtype=np.int64)
    if card["backbone"] is None:
        return cnn_dataset(images, labels, batch_size, flip=mirrored)
    return transfer_dataset(images, labels, card["image_size"], batch_size, preprocess_for(card["backbone"]),
                            flip=mirrored)


def class_probabilities(model, images: np.ndarray, card: dict) -> np.ndarray:
    """`model`'s class probabilities of 32x32 uint8 `images`, as its run evaluated test images:
    with the card's `test_time_flip`, the mean of each image's and its mirror image's."""
    # cards saved before the setting existed lack it: single view
    return view_probabilities(lambda mirrored: predict(model, _pipeline(images, card, mirrored)),
                              bool(card.get("test_time_flip")))[0]


def predict_images(out: str | Path, paths: list[str | Path], stage: str | None = None) -> tuple[str, list[Prediction]]:
    """Classify every image in `paths` (files or folders) with `stage` of the run in `out`.

    Returns the stage used and one Prediction per image, in the order given; an unreadable
    file gets a Prediction with `error` set, and the others are still classified.
    """
    files = image_files(paths)
    model, card = load_stage(out, stage)
    predictions = [Prediction(str(path), []) for path in files]
    pixels = np.zeros((len(files), 32, 32, 3), dtype=np.uint8)
    readable = []
    for index, path in enumerate(files):
        try:
            read_image(path, pixels[index])
            readable.append(index)
        except UserError as exc:
            predictions[index].error = str(exc)
    if readable:
        probabilities = class_probabilities(model, pixels[readable], card)
        for index, row in zip(readable, probabilities):
            best = np.argsort(row)[::-1][:TOP_K]
            predictions[index].top = [(card["class_names"][i], float(row[i])) for i in best]
    return card["stage"], predictions


def format_table(stage: str, predictions: list[Prediction]) -> str:
    """The predictions as a plain-text table, one image a row."""
    width = max([len("image")] + [len(p.image) for p in predictions])
    lines = [f"model: {stage}", f"{'image':<{width}}  " + "  ".join(f"{f'top {k + 1}':<18}" for k in range(TOP_K))]
    for p in predictions:
        cells = [f"{name} {100 * prob:5.1f}%" for name, prob in p.top] if not p.error else [f"error: {p.error}"]
        lines.append(f"{p.image:<{width}}  " + "  ".join(f"{c:<18}" for c in cells).rstrip())
    return "\n".join(lines)


def format_json(stage: str, predictions: list[Prediction]) -> str:
    """The predictions as JSON: the model and, per image, the top classes or the error."""
    return json.dumps({"model": stage, "images": [
        {"image": p.image, **({"error": p.error} if p.error else
                              {"top": [{"class": n, "probability": v} for n, v in p.top]})}
        for p in predictions]}, indent=2)
