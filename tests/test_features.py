"""The feature cache: computed once per image, keyed by what was measured, equal to a direct pass."""

import json

import keras
import numpy as np
import pytest
from conftest import infer

from cifar10_transfer.data import Dataset
from cifar10_transfer.cache import FeatureCache
from cifar10_transfer.models import build_transfer
from cifar10_transfer.pipelines import transfer_dataset


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(60) % 10
    return Dataset(images[:40], labels[:40], images[40:], labels[40:], tuple("abcdefghij"), "test images")


@pytest.fixture(scope="module")
def transfer():
    keras.utils.set_random_seed(0)
    return build_transfer("efficientnet_lite0", 32, "none")


def test_rows_are_computed_once_and_equal_a_direct_backbone_pass(tmp_path, dataset, transfer):
    cache = FeatureCache(tmp_path)
    first = cache.pooled(transfer, dataset, "train", np.arange(10), 32, 4)
    assert cache.computed == 10
    again = cache.pooled(transfer, dataset, "train", np.arange(5, 15), 32, 4)
    assert cache.computed == 15  # only rows 10-14 were missing
    np.testing.assert_array_equal(again[:5], first[5:])
    direct = infer(transfer.features, transfer_dataset(dataset.x_train[:15], np.zeros(15), 32, 4, transfer.preprocess))
    np.testing.assert_allclose(again, direct[5:15], rtol=1e-5, atol=1e-6)
    reopened = FeatureCache(tmp_path)  # another process, later: nothing to compute
    np.testing.assert_array_equal(reopened.pooled(transfer, dataset, "train", np.arange(15), 32, 4)[:10], first)
    assert reopened.computed == 0


def test_a_change_of_weights_size_flip_split_or_data_gets_its_own_entry(tmp_path, dataset, transfer):
    cache = FeatureCache(tmp_path)
    base = cache.key(transfer, dataset, "train", 32)
    keras.utils.set_random_seed(1)
    other_weights = build_transfer("efficientnet_lite0", 32, "none")
    other_data = Dataset(dataset.x_train[::-1], dataset.y_train, dataset.x_test, dataset.y_test,
                         dataset.class_names, "reversed")
    keys = {cache.key(other_weights, dataset, "train", 32), cache.key(transfer, dataset, "train", 48),
            cache.key(transfer, dataset, "train", 32, view="flip"), cache.key(transfer, dataset, "test", 32),
            cache.key(transfer, other_data, "train", 32)}
    assert base not in keys and len(keys) == 5
    assert cache.key(transfer, dataset, "train", 32) == base  # and the same inputs give the same key


def test_an_unfinished_computation_is_redone(tmp_path, dataset, transfer):
    cache = FeatureCache(tmp_path)
    cache.pooled(transfer, dataset, "test", np.arange(4), 32, 4)
    entry = tmp_path / cache.key(transfer, dataset, "test", 32)
    index = json.loads((entry / "pooled.chunks.json").read_text())
    (entry / "pooled.chunks.json").write_text(json.dumps({**index, "chunks": []}))  # killed before recording rows
    cache.pooled(transfer, dataset, "test", np.arange(4), 32, 4)
    assert cache.computed == 8
    assert cache.speed(transfer, dataset, "test", 32)["images"] == 8  # summed over both computations


@pytest.mark.slow
def test_a_second_train_into_the_same_output_takes_every_feature_from_the_shared_cache(tmp_path, capsys):
    from cifar10_transfer.cli import main

    args = ["train", "--data", "synthetic", "--profile", "smoke", "--weights", "none", "--out", str(tmp_path),
            "--set", "models=efficientnet_lite0_head", "--set", "image_size=32", "--set", "train_size=200",
            "--set", "test_size=100"]
    assert main(args) == 0
    assert "train plain (pooled): 160/160 images" in capsys.readouterr().out
    assert main(args) == 0
    assert "(pooled)" not in capsys.readouterr().out  # no image passed the backbone again
    speeds = [json.loads(path.read_text()) for path in tmp_path.glob(".runs/cache/*/speed.json")]
    assert sorted(speed["images"] for speed in speeds) == [100, 200]  # the test set's, and training + validation
