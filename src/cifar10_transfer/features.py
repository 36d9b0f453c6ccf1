"""Pooled backbone features, computed once per image and kept on disk.

One cache entry holds the features of every image of one data split (the training or the
test set) under one backbone, its weights, its input pipeline (size, preprocessing, flip)
and its compute precision. The entry's key is a hash of all of these, measured rather
than named: the backbone's weight values, and the pipeline's output on a fixed probe
image. A change of weights, preprocessing or image size therefore lands in a new entry and
can never reuse stale features. Rows are filled on demand, so a run that uses 10,000 of
the 50,000 training images computes only those, and the next run with other sizes or
seeds computes only what is still missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from .data import Dataset
from .pipelines import transfer_dataset
from .publish import atomic_write, write_atomic

_PROBE = np.arange(2 * 32 * 32 * 3, dtype=np.uint32).reshape(2, 32, 32, 3).astype(np.uint8)  # fixed test image


def _digest(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    return digest.hexdigest()


class FeatureCache:
    """Pooled features of dataset images under `root`, one folder per key (see the module doc).

    `computed` counts the images this cache object ran through a backbone, so callers (and
    tests) can tell a cache hit from a backbone pass.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.computed = 0
        self._fingerprints: dict[int, str] = {}

    def key(self, transfer, dataset: Dataset, split: str, image_size: int, flip: bool = False) -> str:
        """The entry of `split` ("train" or "test") of `dataset` under this model and pipeline."""
        if id(dataset) not in self._fingerprints:
            self._fingerprints[id(dataset)] = dataset.fingerprint()
        weights = _digest(*(np.ascontiguousarray(w.numpy()).tobytes() for w in transfer.backbone.weights))
        probe = next(iter(transfer_dataset(_PROBE, np.zeros(2), image_size, 2, transfer.spec.preprocess,
                                           flip=flip)))[0].numpy()
        return _digest(transfer.spec.name, weights, probe.tobytes(), image_size, flip,
                       transfer.backbone.compute_dtype, self._fingerprints[id(dataset)], split)[:20]

    def pooled(self, transfer, dataset: Dataset, split: str, indices: np.ndarray, image_size: int,
               batch_size: int, flip: bool = False) -> np.ndarray:
        """Features of `dataset`'s `split` images at `indices` (N x feature_dim, float32), computing
        only the ones not cached yet."""
        from .training import predict

        images = dataset.x_train if split == "train" else dataset.x_test
        entry = self.root / self.key(transfer, dataset, split, image_size, flip)
        features, done = self._open(entry, len(images), transfer.spec.feature_dim)
        missing = np.setdiff1d(np.asarray(indices), np.flatnonzero(done))
        if len(missing):
            started = time.perf_counter()
            data = transfer_dataset(images[missing], np.zeros(len(missing)), image_size, batch_size,
                                    transfer.spec.preprocess, flip=flip)
            label = f"features {transfer.spec.name} {split}{' flipped' if flip else ''}"
            features[missing] = predict(transfer.features, data, label, len(missing), batch_size)
            features.flush()
            done[missing] = True
            atomic_write(entry / "done.npy", lambda tmp: np.save(tmp, done))  # only after the rows are on disk
            self.computed += len(missing)
            self._record_speed(entry, len(missing), time.perf_counter() - started)
        return np.array(features[np.asarray(indices)])

    @staticmethod
    def _open(entry: Path, n_images: int, feature_dim: int):
        entry.mkdir(parents=True, exist_ok=True)
        path, done_path = entry / "features.npy", entry / "done.npy"
        if path.is_file():
            features = np.lib.format.open_memmap(path, mode="r+")
            done = np.load(done_path) if done_path.is_file() else np.zeros(n_images, dtype=bool)
        else:
            features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_images, feature_dim))
            done = np.zeros(n_images, dtype=bool)
        return features, done

    @staticmethod
    def _record_speed(entry: Path, images: int, seconds: float) -> None:
        # Summed over every computation of the entry, so many small fills average out.
        path = entry / "speed.json"
        total = json.loads(path.read_text()) if path.is_file() else {"images": 0, "seconds": 0.0}
        total = {"images": total["images"] + images, "seconds": total["seconds"] + seconds}
        write_atomic(path, json.dumps({**total, "images_per_second": total["images"] / total["seconds"]}))

    def speed(self, transfer, dataset: Dataset, split: str, image_size: int) -> dict | None:
        """Images computed into the entry, their seconds and `images_per_second`; None if none were."""
        path = self.root / self.key(transfer, dataset, split, image_size) / "speed.json"
        return json.loads(path.read_text()) if path.is_file() else None
