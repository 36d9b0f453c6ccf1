"""Stage 2 on the cached frozen prefix: cut the backbone, train only what lies after the cut.

With BatchNorm frozen, the backbone layers before the first unfrozen one are a fixed
function of the input image. `cut_backbone` splits the backbone there: the tensors that
cross the cut (two where a residual block is cut: the block's input and its branch) are
computed once per image and view and kept in the `FeatureCache`; the suffix (the unfrozen
layers, the pooling and the head) is a model over those tensors that shares its layers,
and therefore its weights, with the online model. Validation and test images are never
augmented, so one pass serves every epoch; training images get `finetune_views` seeded
augmented copies, and epoch e reads copy e mod K. Online stage 2 (K = 0) still validates
and tests through the suffix over the cached prefix, unless the whole backbone is unfrozen:
then there is no prefix, and the whole model runs on the images.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .backbones import has_frozen_prefix
from .features import FeatureCache
from .pipelines import prefetched


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
    """

    def __init__(self, entries: list[Path], names: list[str], rows: np.ndarray, labels: np.ndarray,
                 batch_size: int, shuffle: bool = False, seed: int = 0):
        self.entries, self.names, self.rows, self.labels = entries, names, np.asarray(rows), np.asarray(labels)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
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
        tensors = [FeatureCache.read(entry, name, self.rows[take]).astype(np.float32) for name in self.names]
        return [*tensors, self.labels[take].astype(np.int64)]

    def dataset(self, shapes: dict) -> tf.data.Dataset:
        """A tf.data pipeline of ({name: batch}, labels); `shapes` gives each tensor's per-image shape."""
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
