"""Backbone outputs computed once per image and kept on disk, and stage 2 over the cached frozen prefix.

One cache entry covers every image of one data split (the training or the test set) under
one backbone, its weights, its input pipeline (size, preprocessing, view) and its compute
precision. Inside it, each backbone tensor that a caller asked for has its own file of
rows: `pooled` (the pooled features of stage 1 and the learning curves) or a tensor that
crosses a cut between frozen and trainable layers (named after the layer that produces it,
so a cut point is a set of files). The entry's key is a hash of everything it depends on,
measured rather than named: the backbone's weight values, and the view pipeline's output on
a fixed probe image. A change of weights, preprocessing, augmentation or image size
therefore lands in a new entry and can never reuse stale rows. Rows are filled on demand,
chunk by chunk: a run that uses 10,000 of the 50,000 training images computes only those,
and a killed run keeps its finished chunks. Each chunk's rows are recorded with their sha256
and checked before they are used; damaged rows are recomputed (see `cache_index`).

Stage 2 on the cached prefix: with BatchNorm frozen, the backbone layers before the first
unfrozen one are a fixed function of the input image. `cut_backbone` splits the backbone
there: the tensors that cross the cut (two where a residual block is cut: the block's input
and its branch) are cached; the suffix (the unfrozen layers, the pooling and the head) is a
model over those tensors that shares its layers, and therefore its weights, with the online
model. Validation and test images are never augmented, so one pass serves every epoch;
training images get `views` seeded augmented copies, and epoch e reads copy e mod K. Online
stage 2 (K = 0) still validates and tests through the suffix over the cached prefix, unless
the whole backbone is unfrozen: then there is no prefix, and the whole model runs on images.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .cache_index import Damaged, Layout, TensorStore, disk_errors
from .data import Dataset
from .pipelines import prefetched, view_dataset
from .publish import write_atomic
from .recipe import has_frozen_prefix
from .training import ProgressLines, predict

_PROBE = np.arange(2 * 32 * 32 * 3, dtype=np.uint32).reshape(2, 32, 32, 3).astype(np.uint8)  # fixed test image
CHUNK = 512  # images per computation and write: bounds memory (ResNet50's cut: ~0.45 MB per image in bfloat16)


def _digest(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    return digest.hexdigest()


def pooled_output(transfer):
    """The backbone's pooled features as a tensor of its own graph, pooled in the model's precision."""
    pool = transfer.model.get_layer("pool")
    return keras.layers.GlobalAveragePooling2D(dtype=pool.dtype_policy)(transfer.backbone.output)


class FeatureCache:
    """Backbone outputs of dataset images under `root`, one folder per key (see the module doc).

    `computed` counts the images this cache object ran through a backbone, so callers (and
    tests) can tell a cache hit from a backbone pass.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.computed = 0
        self._fingerprints: dict[int, str] = {}
        self._extractors: dict[tuple, tuple] = {}
        self._stores: dict[Path, TensorStore] = {}  # per tensor file, so that reads per batch parse no index
        self._verified: set[tuple] = set()  # chunks whose bytes matched their digest (see `TensorStore.bad_chunks`)

    @classmethod
    def beside(cls, run_dir: str | Path) -> FeatureCache:
        """The cache that every run of one `OUT/.runs/` shares, beside the timestamped run folders: the
        table's stages, the learning curves, the resolution study and later runs compute each image once."""
        return cls(Path(run_dir).resolve().parent / "cache")

    def key(self, transfer, dataset: Dataset, split: str, image_size: int, view: str = "plain") -> str:
        """The entry of `split` ("train" or "test") of `dataset` under this model and view pipeline."""
        if id(dataset) not in self._fingerprints:
            self._fingerprints[id(dataset)] = dataset.fingerprint()
        weights = _digest(*(np.ascontiguousarray(w.numpy()).tobytes() for w in transfer.backbone.weights))
        probe = next(iter(view_dataset(_PROBE, np.arange(2), image_size, 2, transfer.preprocess, view)))[0]
        return _digest(transfer.spec.name, weights, probe.numpy().tobytes(), image_size, view,
                       transfer.backbone.compute_dtype, self._fingerprints[id(dataset)], split)[:20]

    def fill(self, transfer, dataset: Dataset, split: str, indices: np.ndarray, image_size: int,
             batch_size: int, tensors: dict, view: str = "plain") -> Path:
        """Compute, in one backbone pass, the `tensors` (name: tensor of the backbone's graph) of the
        images at `indices` that are not cached yet, or whose cached rows are damaged (one line per
        damaged file says so); return the entry folder for `read`."""
        images = dataset.x_train if split == "train" else dataset.x_test
        entry = self.root / self.key(transfer, dataset, split, image_size, view)
        with disk_errors(entry):
            entry.mkdir(parents=True, exist_ok=True)
        stores, missing = self._stores_for(entry, len(images), tensors, np.asarray(indices, dtype=np.int64))
        if not len(missing):
            return entry
        started = time.perf_counter()
        extractor = self._extractor(transfer, tensors)
        # bytes each file takes on, named if the disk fills up
        needed = {name: np.count_nonzero(~store.done[missing]) * store.layout.row_bytes
                  for name, store in stores.items()}
        for name, store in stores.items():
            if not store.ready:
                store.create(needed[name])
        progress = ProgressLines(f"{transfer.spec.name} {split} {view} ({', '.join(tensors)})",
                                 len(missing), CHUNK)
        progress.on_predict_begin()
        for number, start in enumerate(range(0, len(missing), CHUNK)):
            rows = missing[start:start + CHUNK]
            values = predict(extractor, view_dataset(images[rows], rows, image_size, batch_size,
                                                     transfer.preprocess, view))
            for name, store in stores.items():
                new = ~store.done[rows]  # rows another tensor lacked are not rewritten here
                if new.any():
                    store.write(rows[new], np.asarray(values[name])[new], needed[name], self._verified)
            progress.on_predict_batch_end(number)
        self.computed += len(missing)
        self._record_speed(entry, len(missing), time.perf_counter() - started)
        return entry

    def _stores_for(self, entry: Path, n_images: int, tensors: dict, indices: np.ndarray) -> tuple[dict, np.ndarray]:
        """Each tensor's store in `entry`, with what is damaged dropped, and the rows to compute:
        those of `indices` that some tensor lacks, and the whole of each chunk that failed its digest."""
        stores, damage, lost = {}, {}, [indices]
        for name, tensor in tensors.items():
            layout = Layout(n_images, tuple(tensor.shape[1:]), "float32" if name == "pooled" else str(tensor.dtype))
            path = entry / f"{name}.npy"
            stores[name] = TensorStore(path, layout)
            if not any(p.exists() for p in (path, stores[name].index_path, path.with_name(f"{name}.done.npy"))):
                continue  # never filled
            try:
                store = TensorStore.load(path, layout)
                store.check()
            except Damaged as exc:
                damage[name] = exc.reason  # the file is recreated whole
                continue
            stores[name] = store
            bad = store.bad_chunks(indices, self._verified)
            if bad:
                damage[name] = "digest mismatch"
                lost.append(store.drop(bad))
        self._stores.update({store.path: store for store in stores.values()})
        done = np.logical_and.reduce([store.done for store in stores.values()])
        rows = np.unique(np.concatenate(lost))
        missing = rows[~done[rows]]
        for name, reason in damage.items():
            lacking = np.count_nonzero(~stores[name].done[missing])
            print(f"cache: recomputing {lacking:,} rows of {stores[name].path} ({reason})", flush=True)
        return stores, missing

    def _extractor(self, transfer, tensors: dict) -> keras.Model:
        """One model per backbone and set of tensors, so its predict function is traced once."""
        key = (id(transfer.backbone), tuple(tensors))
        found = self._extractors.get(key)
        if found is None or found[0] is not transfer.backbone:  # an id can be reused after a model is gone
            found = self._extractors[key] = (transfer.backbone, keras.Model(transfer.backbone.input, tensors))
        return found[1]

    def verify(self, entry: Path, name: str, indices: np.ndarray) -> TensorStore:
        """The store of tensor `name` in a filled entry, once the chunks holding rows `indices` matched
        their digests (each chunk is read once per cache object); `Damaged` if they do not."""
        path, indices = Path(entry) / f"{name}.npy", np.asarray(indices, dtype=np.int64)
        store = self._stores.get(path)
        if store is None or not store.done[indices].all():  # not loaded, or filled since by another object
            store = self._stores[path] = TensorStore.load(path)
        lacking = np.count_nonzero(~store.done[indices])
        if lacking:
            raise Damaged(path, f"{lacking:,} of the rows asked were never computed")
        if store.bad_chunks(indices, self._verified):
            raise Damaged(path, "digest mismatch")
        return store

    def read(self, entry: Path, name: str, indices: np.ndarray) -> np.ndarray:
        """Rows `indices` of tensor `name` in a filled entry, in the order asked, in its stored dtype."""
        indices = np.asarray(indices, dtype=np.int64)
        array = self.verify(entry, name, indices).open()
        order = np.argsort(indices, kind="stable")
        rows = np.empty((len(indices), *array.shape[1:]), array.dtype)
        rows[order] = array[indices[order]]  # ascending reads from disk
        return rows

    def pooled(self, transfer, dataset: Dataset, split: str, indices: np.ndarray, image_size: int,
               batch_size: int, view: str = "plain", also: dict | None = None) -> np.ndarray:
        """Pooled features of `dataset`'s `split` images at `indices` (N x feature_dim, float32),
        computing only the ones not cached yet, together with the tensors `also` asks for."""
        tensors = {"pooled": pooled_output(transfer), **(also or {})}
        entry = self.fill(transfer, dataset, split, indices, image_size, batch_size, tensors, view)
        return self.read(entry, "pooled", indices)

    @staticmethod
    def _record_speed(entry: Path, images: int, seconds: float) -> None:
        # Summed over every computation of the entry, so many small fills average out.
        path = entry / "speed.json"
        total = _read_speed(path) or {"images": 0, "seconds": 0.0}
        total = {"images": total["images"] + images, "seconds": total["seconds"] + seconds}
        with disk_errors(path):
            write_atomic(path, json.dumps({**total, "images_per_second": total["images"] / total["seconds"]}))

    def speed(self, transfer, dataset: Dataset, split: str, image_size: int) -> dict | None:
        """Images computed into the plain entry, their seconds and `images_per_second`; None if none were."""
        return _read_speed(self.root / self.key(transfer, dataset, split, image_size) / "speed.json")


def _read_speed(path: Path) -> dict | None:
    """An entry's speed record; None where there is none or it is damaged (it only times, so it starts again)."""
    try:
        record = json.loads(path.read_text())
        return record if all(isinstance(record.get(k), (int, float)) for k in ("images", "seconds")) else None
    except (OSError, ValueError, AttributeError):
        return None


@dataclass(frozen=True, eq=False)
class BackboneCut:
    """A backbone cut before its last `n_layers` layers.

    `tensors` maps each tensor that crosses the cut to the name of the layer producing it
    (names in the backbone's graph, so the cache can compute them); `suffix` maps those
    tensors (a dict of inputs with the same names) to class probabilities.
    """

    n_layers: int
    first_trainable: str  # name of the first backbone layer after the cut
    tensors: dict
    suffix: keras.Model


def cut_backbone(transfer, n_layers: int) -> BackboneCut | None:
    """Cut `transfer`'s backbone before its last `n_layers` layers (as `unfreeze` counts them).

    The suffix computes exactly what the online model computes from those tensors on: the
    same layer objects, called with `training=False` inside the backbone as online. None
    when every layer after the input is unfrozen: the prefix would be the images themselves,
    and caching them (224x224x3 float32: 0.6 MB per image) saves no computation.
    """
    if not has_frozen_prefix(transfer.spec, n_layers):
        return None
    layers = transfer.backbone.layers
    cut = len(layers) - n_layers
    if cut >= len(layers):
        raise ValueError(f"n_layers={n_layers} unfreezes no layer of {len(layers)}")
    produced = {id(layer.output): layer.name for layer in layers[:cut]}
    tensors = {}
    for layer in layers[cut:]:
        for tensor in keras.tree.flatten(layer.input):
            if id(tensor) in produced:
                tensors.setdefault(produced[id(tensor)], tensor)
    after_cut = keras.Model(list(tensors.values()), transfer.backbone.output, name=f"{transfer.spec.name}_after_cut")
    inputs = {name: keras.Input(tensor.shape[1:], name=name) for name, tensor in tensors.items()}
    pooled = transfer.model.get_layer("pool")(after_cut(list(inputs.values()), training=False))
    suffix = keras.Model(inputs, transfer.head(pooled), name=f"{transfer.spec.name}_suffix")
    return BackboneCut(n_layers, layers[cut].name, tensors, suffix)


class CachedRows:
    """Batches of cut tensors and labels read from cache entries, one entry per view.

    Epoch e reads view e mod len(entries), in an order drawn from (seed, e) when `shuffle`:
    both follow the epoch number, so a resumed stage reads what an uninterrupted one would.
    Rows are read per batch from disk, so memory does not grow with the number of images.
    They are verified through `cache` (the one that filled the entries has verified them
    already; by default a new one) when the pipeline is made, where damage can still be
    reported as a one-line error rather than as an error inside TensorFlow's pipeline.
    """

    def __init__(self, entries: list[Path], names: list[str], rows: np.ndarray, labels: np.ndarray,
                 batch_size: int, shuffle: bool = False, seed: int = 0, cache: FeatureCache | None = None):
        self.entries, self.names, self.rows, self.labels = entries, names, np.asarray(rows), np.asarray(labels)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.cache = cache or FeatureCache(Path(entries[0]).parent)
        self.epoch = 0

    @property
    def view(self) -> int:
        """The view that the current epoch reads."""
        return self.epoch % len(self.entries)

    def _batch(self, step) -> list[np.ndarray]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows)) if self.shuffle
                 else np.arange(len(self.rows)))
        take = order[int(step) * self.batch_size:(int(step) + 1) * self.batch_size]
        entry = self.entries[self.view]
        tensors = [self.cache.read(entry, name, self.rows[take]).astype(np.float32) for name in self.names]
        return [*tensors, self.labels[take].astype(np.int64)]

    def dataset(self, shapes: dict) -> tf.data.Dataset:
        """A tf.data pipeline of ({name: batch}, labels); `shapes` gives each tensor's per-image shape."""
        for entry in self.entries:
            for name in self.names:
                self.cache.verify(entry, name, self.rows)
        def read(step):
            values = tf.numpy_function(self._batch, [step], [tf.float32] * len(self.names) + [tf.int64])
            for value, name in zip(values, self.names):
                value.set_shape((None, *shapes[name]))
            values[-1].set_shape((None,))
            return dict(zip(self.names, values[:-1])), values[-1]

        steps = math.ceil(len(self.rows) / self.batch_size)
        return prefetched(tf.data.Dataset.range(steps).map(read))


class ViewSchedule(keras.callbacks.Callback):
    """Tells `CachedRows` which epoch starts, and logs the view each epoch read (history.csv)."""

    def __init__(self, rows: CachedRows):
        super().__init__()
        self.rows = rows

    def on_epoch_begin(self, epoch, logs=None):
        self.rows.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        logs["view"] = self.rows.view


class SuffixValidation(keras.callbacks.Callback):
    """Validation of online stage 2 through the suffix over cached prefix tensors.

    The suffix shares its layers with the online model, so it scores the same weights with
    the same function, without a backbone pass over the validation images each epoch. It
    writes `val_loss` and `val_accuracy` as Keras would (so `ReduceLROnPlateau`, listed
    after it, sees them) and adds its seconds to the epoch's.
    """

    def __init__(self, suffix: keras.Model, data):
        super().__init__()
        self.suffix, self.data = suffix, data

    def on_epoch_end(self, epoch, logs=None):
        started = time.perf_counter()
        scores = self.suffix.evaluate(self.data, verbose=0, return_dict=True)
        logs.update({f"val_{key}": value for key, value in scores.items()})
        logs["epoch_seconds"] = logs.get("epoch_seconds", 0.0) + time.perf_counter() - started
