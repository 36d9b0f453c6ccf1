import numpy as np
import pytest

from cifar10_transfer.config import make_config
from cifar10_transfer.data import Dataset
from cifar10_transfer.errors import UserError
from cifar10_transfer.backbones import preprocess_for
from cifar10_transfer.pipelines import (array_dataset, augment_batch, augmentation_examples, cnn_dataset,
                                        epoch_variable, split_dataset, transfer_dataset, translate_batch)


def _labelled_dataset(n_train=50_000, n_test=10_000):
    """CIFAR-sized label arrays with tiny images (the split only looks at labels and indices)."""
    x_train = np.arange(n_train, dtype=np.int64).reshape(-1, 1, 1, 1)  # each "image" is its index
    x_test = np.arange(n_test, dtype=np.int64).reshape(-1, 1, 1, 1)
    return Dataset(x_train, np.arange(n_train) % 10, x_test, np.arange(n_test) % 10,
                   tuple(f"c{i}" for i in range(10)), "labels only")


def test_study_split_sizes_and_stratification():
    splits = split_dataset(_labelled_dataset(), make_config("seed"))
    assert splits.sizes() == {"train": 8000, "val": 2000, "test": 10000}
    assert np.bincount(splits.y_train).tolist() == [800] * 10
    assert np.bincount(splits.y_val).tolist() == [200] * 10
    assert not set(splits.x_train.ravel()) & set(splits.x_val.ravel())  # no image in both


def test_split_is_deterministic_in_the_seed():
    dataset = _labelled_dataset()
    a = split_dataset(dataset, make_config("seed"))
    b = split_dataset(dataset, make_config("seed"))
    c = split_dataset(dataset, make_config("seed", ["seed=4"]))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_train, c.x_train)


def test_test_size_subset_is_stratified():
    splits = split_dataset(_labelled_dataset(), make_config("seed", ["test_size=500"]))
    assert np.bincount(splits.y_test).tolist() == [50] * 10


def test_split_refuses_impossible_sizes():
    dataset = _labelled_dataset(1000, 100)
    with pytest.raises(UserError, match="larger than the 1000 training images"):
        split_dataset(dataset, make_config("seed", ["train_size=5000"]))
    with pytest.raises(UserError, match="larger than the 100 test images"):
        split_dataset(dataset, make_config("seed", ["train_size=500", "test_size=200"]))
    with pytest.raises(UserError, match="fewer than 10 images"):
        split_dataset(dataset, make_config("seed", ["train_size=40"]))


RESNET = preprocess_for("resnet50")


def _images(n=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10


def test_cnn_pipeline_scales_to_unit_range():
    x, y = _images(10)
    images, labels = next(iter(cnn_dataset(x, y, batch_size=4)))
    assert images.shape == (4, 32, 32, 3) and images.dtype.name == "float32"
    np.testing.assert_allclose(images.numpy(), x[:4] / 255.0, rtol=1e-6)
    assert labels.numpy().tolist() == [0, 1, 2, 3]
    assert sum(len(b[1]) for b in cnn_dataset(x, y, 4, shuffle=True, seed=1)) == 10


def test_transfer_pipeline_resizes_and_applies_the_backbones_preprocessing():
    x = np.full((3, 32, 32, 3), 128, dtype=np.uint8)
    images, _ = next(iter(transfer_dataset(x, np.arange(3), 64, 3, RESNET)))
    assert images.shape == (3, 64, 64, 3)
    # caffe-style preprocessing: RGB -> BGR, minus the ImageNet channel means
    np.testing.assert_allclose(images.numpy()[0, 0, 0], [128 - 103.939, 128 - 116.779, 128 - 123.68], atol=1e-3)
    lite, _ = next(iter(transfer_dataset(x, np.arange(3), 64, 3, preprocess_for("efficientnet_lite0"))))
    np.testing.assert_allclose(lite.numpy()[0, 0, 0], [1 / 128] * 3, atol=1e-6)  # (x - 127) / 128


def test_every_pipeline_runs_without_the_tf_data_autotuner():
    # the autotuner made passes wait 2.4 s at their end on a 2-core CPU (see pipelines.prefetched)
    x, y = _images(8)
    pipelines = [cnn_dataset(x, y, 4, shuffle=True), array_dataset(x.reshape(8, -1), y, 4),
                 transfer_dataset(x, y, 64, 4, RESNET),
                 transfer_dataset(x, y, 64, 4, RESNET, shuffle=True, augment=True, flip=True)]
    for pipeline in pipelines:
        assert pipeline.options().autotune.enabled is False
        assert sum(len(labels) for _, labels in pipeline) == 8


def test_flip_mirrors_columns():
    x, y = _images(2)
    plain, _ = next(iter(transfer_dataset(x, y, 32, 2, RESNET)))
    flipped, _ = next(iter(transfer_dataset(x, y, 32, 2, RESNET, flip=True)))
    np.testing.assert_allclose(flipped.numpy(), plain.numpy()[:, :, ::-1], atol=1e-4)


def test_augmentation_is_in_pixel_range_and_seeded():
    x, _ = _images(8)
    a = augmentation_examples(x, 3, seed=5)
    b = augmentation_examples(x, 3, seed=5)
    assert a.shape == (8, 3, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 0], a[:, 1])
    out = augment_batch(np.float32(x), np.array([1, 2])).numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0


def test_augmented_pipeline_changes_between_epochs_but_repeats_across_runs():
    x, y = _images(4)

    def two_epochs():
        ds = transfer_dataset(x, y, 32, 4, RESNET, augment=True, seed=3)
        batches = []
        for epoch in (0, 1):  # as training.fit_stage sets it at each epoch's start
            epoch_variable().assign(epoch)
            batches.append(next(iter(ds))[0].numpy())
        epoch_variable().assign(0)
        return batches

    first, second = two_epochs(), two_epochs()
    assert not np.allclose(first[0], first[1])
    np.testing.assert_allclose(first[0], second[0])
    np.testing.assert_allclose(first[1], second[1])


def test_progressive_sizes_resize_each_epoch_to_its_side_and_keep_the_last_after_the_list():
    x, y = _images(4)
    ds = transfer_dataset(x, y, [32, 48], 4, RESNET, shuffle=True, augment=True, seed=3)
    sides = []
    for epoch in (0, 1, 5):  # as training.fit_stage sets it at each epoch's start
        epoch_variable().assign(epoch)
        sides.append(next(iter(ds))[0].shape[1:3])
    epoch_variable().assign(0)
    assert sides == [(32, 32), (48, 48), (48, 48)]


def test_translation_flips_and_shifts_each_image_within_its_reflect_padding():
    x, _ = _images(6)
    out = translate_batch(x, np.array([4, 2]), 4).numpy()
    assert out.shape == x.shape and out.dtype == np.uint8
    for image, shifted in zip(x, out):
        views = [np.pad(view, [(4, 4), (4, 4), (0, 0)], mode="reflect") for view in (image, image[:, ::-1])]
        offsets = [(f, i, j) for f, padded in enumerate(views) for i in range(9) for j in range(9)
                   if np.array_equal(padded[i:i + 32, j:j + 32], shifted)]
        assert offsets  # a crop of the padded image or of its mirror
    np.testing.assert_array_equal(out, translate_batch(x, np.array([4, 2]), 4).numpy())
    assert not np.array_equal(out, translate_batch(x, np.array([4, 3]), 4).numpy())


def test_the_translated_cnn_pipeline_keeps_unit_range_and_is_keyed_by_seed_and_epoch():
    x, y = _images(8)

    def batch(epoch, seed=3):
        epoch_variable().assign(epoch)  # as training.fit_stage sets it at each epoch's start
        images, labels = next(iter(cnn_dataset(x, y, 8, shuffle=True, seed=seed, translate=4)))
        epoch_variable().assign(0)
        return images.numpy(), labels.numpy()

    images, labels = batch(1)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert sorted(labels.tolist()) == sorted(y.tolist())
    np.testing.assert_array_equal(images, batch(1)[0])  # same seed and epoch: the same batch
    assert not np.array_equal(images, batch(2)[0]) and not np.array_equal(images, batch(1, seed=4)[0])
