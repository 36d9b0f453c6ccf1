"""The seeded, stratified split and the `tf.data` input pipelines.

The backbone pipeline resizes each batch to `image_size` on the fly, so the 224x224
float images (0.6 MB each) are never materialized as one array: memory stays flat
whatever `train_size` is. Augmentation happens in pixel space [0, 255], before
`preprocess_input`, with stateless random ops so that a seed fixes every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

from .config import RunConfig
from .data import Dataset
from .errors import UserError

ZOOM_RANGE = (0.8, 1.0)  # side of the random crop, as a fraction of the image, before resizing back
BRIGHTNESS_DELTA = 0.1 * 255  # largest brightness shift, in pixel units
CONTRAST_RANGE = (0.8, 1.2)  # contrast factor around each image's mean
_EPOCH: tf.Variable | None = None  # made on first use: creating a variable starts TensorFlow's runtime


def epoch_variable() -> tf.Variable:
    """The epoch that training is in, which shuffling and augmentation are keyed by.

    `training.fit_stage` sets it at each epoch's start. Keyed by the epoch number, not drawn
    from a stream that advances with each pass, a stage killed in epoch e and resumed sees the
    same order and the same augmented images in e as a run that was never stopped.
    """
    global _EPOCH
    if _EPOCH is None:
        with tf.init_scope():
            _EPOCH = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    return _EPOCH


@dataclass(frozen=True, eq=False)
class Splits:
    """Train, validation and test arrays of one run (uint8 images, int64 labels).

    The indices say where each image sits in the dataset (train and val index its training
    set, test its test set), so features cached per dataset image can be looked up.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    train_index: np.ndarray
    val_index: np.ndarray
    test_index: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def _stratified_take(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a stratified, seeded subset of `size` items (all of them when size == len)."""
    indices = np.arange(len(labels))
    if size == len(labels):
        return indices
    taken, _ = train_test_split(indices, train_size=size, stratify=labels, random_state=seed)
    return np.sort(taken)


def split_dataset(dataset: Dataset, config: RunConfig) -> Splits:
    """Draw `train_size` training images, hold out `val_fraction` of them, and take `test_size`.

    Every draw is stratified by class and deterministic from `config.seed`. The study's
    setting (10,000, 0.2, whole test set) gives 8,000 / 2,000 / 10,000.
    """
    if config.train_size > len(dataset.y_train):
        raise UserError(f"train_size={config.train_size} is larger than the {len(dataset.y_train)} "
                        "training images; lower it with --set train_size=N.")
    test_size = config.test_size or len(dataset.y_test)
    if test_size > len(dataset.y_test):
        raise UserError(f"test_size={test_size} is larger than the {len(dataset.y_test)} test images.")
    n_classes = len(dataset.class_names)
    n_val = int(round(config.train_size * config.val_fraction))
    if min(n_val, config.train_size - n_val) < n_classes:
        raise UserError(f"train_size={config.train_size} with val_fraction={config.val_fraction} leaves "
                        f"fewer than {n_classes} images in a split; raise train_size.")
    subset = _stratified_take(dataset.y_train, config.train_size, config.seed)
    train_idx, val_idx = train_test_split(subset, test_size=n_val, stratify=dataset.y_train[subset],
                                          random_state=config.seed)
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    test_idx = _stratified_take(dataset.y_test, test_size, config.seed)
    return Splits(dataset.x_train[train_idx], dataset.y_train[train_idx],
                  dataset.x_train[val_idx], dataset.y_train[val_idx],
                  dataset.x_test[test_idx], dataset.y_test[test_idx], dataset.class_names,
                  train_idx, val_idx, test_idx)


def cnn_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False,
                seed: int = 0, flip: bool = False, translate: int = 0) -> tf.data.Dataset:
    """Batches of 32x32 images scaled to [0, 1] with their labels, for the models trained from
    scratch; `flip=True` mirrors every image, as in `transfer_dataset`; `translate` > 0 augments
    each batch with random flips and shifts of up to that many pixels (`translate_batch`)."""
    ds = _batched(x, y, batch_size, shuffle, seed)
    if translate:
        ds = _augmented(ds, seed, lambda images, key: translate_batch(images, key, translate))
    ds = ds.map(lambda images, labels: (tf.cast(images, tf.float32) / 255.0, labels),
                num_parallel_calls=tf.data.AUTOTUNE)
    if flip:
        ds = ds.map(lambda images, labels: (tf.reverse(images, axis=[2]), labels))
    return prefetched(ds)


def transfer_dataset(x: np.ndarray, y: np.ndarray, image_size: int | list[int], batch_size: int, preprocess,
                     shuffle: bool = False, augment: bool = False, seed: int = 0,
                     flip: bool = False) -> tf.data.Dataset:
    """Batches resized to `image_size`, optionally augmented or flipped, then `preprocess`.

    `image_size` is a side in pixels, or one per epoch (stage 2's progressive sizes): epoch e's
    batches are resized to side e (the last side after the list ends), keyed by the epoch as the
    shuffle is, so a resumed stage sees the sizes an uninterrupted one would. `preprocess` is the
    backbone's input scaling of float pixels in [0, 255] (its registry entry's). `flip=True`
    mirrors every image (flipped copies in the feature cache, and `test_time_flip`'s second view).
    """
    ds = _batched(x, y, batch_size, shuffle, seed).map(
        lambda images, labels: (_resized(tf.cast(images, tf.float32), image_size), labels),
        num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        ds = _augmented(ds, seed, augment_batch)
    if flip:
        ds = ds.map(lambda images, labels: (tf.reverse(images, axis=[2]), labels))
    ds = ds.map(lambda images, labels: (preprocess(images), labels), num_parallel_calls=tf.data.AUTOTUNE)
    return prefetched(ds)


def _resized(images: tf.Tensor, image_size: int | list[int]) -> tf.Tensor:
    """`images` resized to `image_size`, or to this epoch's side of a list of sides per epoch."""
    if isinstance(image_size, int):
        return tf.image.resize(images, (image_size, image_size))
    epoch = tf.minimum(epoch_variable().read_value(), len(image_size) - 1)
    side = tf.gather(tf.constant(image_size, tf.int32), epoch)
    return tf.image.resize(images, tf.stack([side, side]))


def view_dataset(x: np.ndarray, indices: np.ndarray, image_size: int, batch_size: int, preprocess,
                 view: str = "plain") -> tf.data.Dataset:
    """Batches of one cached view of images `x` (dataset rows `indices`), labels all zero.

    `view` is "plain" (resized only), "flip" (mirrored) or "augment-<seed>-<k>": the k-th
    augmented copy, drawn by `augment_batch` (the online augmentation, same distribution)
    with a key made of the seed, k and the image's dataset row. An image's copy therefore
    does not depend on which other images share its batch, and a rerun rebuilds it exactly.
    """
    kind, *numbers = view.split("-")
    if kind in ("plain", "flip") and not numbers:
        return transfer_dataset(x, np.zeros(len(x)), image_size, batch_size, preprocess, flip=kind == "flip")
    if kind != "augment" or len(numbers) != 2 or not all(n.isdigit() for n in numbers):
        raise UserError(f"unknown view {view!r}; use plain, flip or augment-<seed>-<k>.")
    seed, copy = map(int, numbers)
    keys = np.stack([np.full(len(x), copy), seed * 1_000_000 + np.asarray(indices)], axis=1).astype(np.int64)
    resize = lambda image: tf.image.resize(tf.cast(image, tf.float32)[None], (image_size, image_size))
    ds = tf.data.Dataset.from_tensor_slices((x, keys)).map(
        lambda image, key: augment_batch(resize(image), key)[0], num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).map(lambda images: (preprocess(images), tf.zeros(tf.shape(images)[0])),
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return prefetched(ds)


def array_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False,
                  seed: int = 0) -> tf.data.Dataset:
    """Batches of in-memory arrays as they are (cached features), shuffled per epoch when `shuffle`."""
    return prefetched(_batched(x, y, batch_size, shuffle, seed))


def prefetched(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Prefetch (every pipeline of the package ends here), with tf.data's autotuning model switched off.

    Why (TF 2.21, 2-core CPU): with the autotuner, many passes over a dataset waited about
    2.4 s at their end, which hid the bfloat16 speed-up in short timings and made CNN
    training take about a quarter longer (`make bench`). Without it, `AUTOTUNE` parallelism
    is min(16, CPU cores) and the prefetch buffer still grows on demand.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _batched(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """Batches of (x, y); shuffled, in an order drawn from (seed, epoch) alone (see `epoch_variable`)."""
    if not shuffle:
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    epoch, n = epoch_variable(), len(y)
    order = tf.data.Dataset.range(1).flat_map(lambda _: tf.data.Dataset.from_tensor_slices(
        tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), tf.stack([seed, epoch.read_value()]))
    )).apply(tf.data.experimental.assert_cardinality(n))  # Keras counts the steps of an epoch from it
    x_all, y_all = tf.constant(x), tf.constant(y)
    return order.batch(batch_size).map(lambda rows: (tf.gather(x_all, rows), tf.gather(y_all, rows)),
                                       num_parallel_calls=tf.data.AUTOTUNE)


def _augmented(ds: tf.data.Dataset, seed: int, augment) -> tf.data.Dataset:
    """`ds` with `augment(images, key)` applied to each batch, batch b of epoch e under the key
    (seed · 1,000,003 + e, b): its own key, whatever ran before (see `epoch_variable`)."""
    epoch = epoch_variable()
    return ds.enumerate().map(
        lambda b, batch: (augment(batch[0], tf.stack([seed * 1_000_003 + epoch.read_value(), b])), batch[1]),
        num_parallel_calls=tf.data.AUTOTUNE)


def translate_batch(images: tf.Tensor, key: tf.Tensor, padding: int) -> tf.Tensor:
    """Random horizontal flip and translation of a batch of images (any dtype): each image is padded
    by `padding` pixels per side, by reflection, and cropped back to its size at a random offset,
    0 to 2 · padding in each axis (the from-scratch ResNet's augmentation, as in ResNet-9 and airbench).

    `key` (two int64) seeds the stateless ops: the same key gives the same batch.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(key, tf.int64), num=2)
    n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    flip = tf.random.stateless_uniform([n], seeds[0]) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([n, 2], seeds[1], 0, 2 * padding + 1, dtype=tf.int32)
    rows = tf.gather(padded, offsets[:, :1] + tf.range(height), axis=1, batch_dims=1)
    return tf.gather(rows, offsets[:, 1:] + tf.range(width), axis=2, batch_dims=1)


def augment_batch(images: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
    """Random flip, crop/zoom, brightness and contrast of float images in [0, 255].

    `key` (two int64) seeds the stateless ops: the same key gives the same augmentation.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(key, tf.int64), num=5)
    n = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    flip = tf.random.stateless_uniform([n], seeds[0]) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    side = tf.random.stateless_uniform([n], seeds[1], *ZOOM_RANGE)
    corner = tf.random.stateless_uniform([n, 2], seeds[2]) * (1.0 - side[:, None])
    boxes = tf.concat([corner, corner + side[:, None]], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(n), size)
    shift = tf.random.stateless_uniform([n, 1, 1, 1], seeds[3], -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    factor = tf.random.stateless_uniform([n, 1, 1, 1], seeds[4], *CONTRAST_RANGE)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * factor + mean + shift
    return tf.clip_by_value(images, 0.0, 255.0)


def augmentation_examples(images: np.ndarray, n_variants: int, seed: int) -> np.ndarray:
    """`n_variants` augmented copies of each 32x32 image, as uint8 (for the augmentation figure)."""
    source = tf.cast(tf.convert_to_tensor(images), tf.float32)
    variants = [augment_batch(source, tf.constant([seed, i], tf.int64)) for i in range(n_variants)]
    return np.stack([v.numpy() for v in variants], axis=1).round().astype(np.uint8)
