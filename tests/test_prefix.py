"""Stage 2 on the cached frozen prefix: the cut is exact, views are seeded, resume still works."""

import numpy as np
import pytest
from conftest import infer

from cifar10_transfer.cache import CachedRows, FeatureCache, ViewSchedule, cut_backbone
from cifar10_transfer.cache_index import Layout, TensorStore
from cifar10_transfer.config import make_config
from cifar10_transfer.data import Dataset, synthetic_dataset
from cifar10_transfer.models import build_transfer
from cifar10_transfer.pipelines import transfer_dataset
from cifar10_transfer.recipe import has_frozen_prefix
from cifar10_transfer.registry import BACKBONES
from cifar10_transfer.runs import run_all
from cifar10_transfer.stages import Run

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
DATA = Dataset(IMAGES, np.arange(12) % 10, IMAGES[:4], np.arange(4), tuple("abcdefghij"), "test images")


@pytest.mark.parametrize("name", list(BACKBONES))
def test_suffix_over_cached_prefix_equals_the_online_model(tmp_path, name):
    spec = BACKBONES[name]  # its default depth, or half its layers where the default unfreezes them all
    depth = spec.stage2.layers if has_frozen_prefix(spec, spec.stage2.layers) else spec.layers // 2
    transfer = build_transfer(name, 32, "none")
    cut = cut_backbone(transfer, depth)
    cache = FeatureCache(tmp_path)
    entry = cache.fill(transfer, DATA, "train", np.arange(12), 32, 4, cut.tensors)
    cached = {tensor: cache.read(entry, tensor, np.arange(12)) for tensor in cut.tensors}
    images = transfer_dataset(IMAGES, np.zeros(12), 32, 4, transfer.preprocess)
    np.testing.assert_allclose(infer(cut.suffix, cached), infer(transfer.model, images), rtol=1e-4, atol=1e-6)
    # the pooled features, scaled to their size (random-init activations can be tiny), say more
    after_cut = cut.suffix.get_layer(f"{name}_after_cut")

    def pooled(rows):
        return infer(after_cut, list(rows.values())).mean(axis=(1, 2))

    online = infer(transfer.features, images)
    scale = np.abs(online).max()
    np.testing.assert_allclose(pooled(cached) / scale, online / scale, atol=1e-5)
    shuffled = {tensor: rows[::-1] for tensor, rows in cached.items()}  # a wrong input must show
    assert not np.allclose(pooled(shuffled) / scale, online / scale, atol=1e-3)
    assert cut.first_trainable == transfer.backbone.layers[-depth].name


def test_a_cut_inside_a_residual_block_caches_both_crossing_tensors():
    transfer = build_transfer("resnet50", 32, "none")
    cut = cut_backbone(transfer, 30)  # the study's depth cuts conv5_block1 after its first BatchNorm
    assert list(cut.tensors) == ["conv5_block1_1_bn", "conv4_block6_out"]  # the branch and the block input
    assert list(cut_backbone(transfer, 1).tensors) == ["conv5_block3_add"]  # after the last addition: one
    # every layer after the input unfrozen: the prefix would be the images, so there is no cut
    assert cut_backbone(transfer, len(transfer.backbone.layers) - 1) is None
    assert cut_backbone(transfer, len(transfer.backbone.layers)) is None


def test_views_are_seeded_per_image_and_differ_between_copies(tmp_path):
    transfer = build_transfer("efficientnet_lite0", 32, "none")
    cut = cut_backbone(transfer, 20)
    (name,) = cut.tensors

    def view_rows(cache_dir, rows, view):
        cache = FeatureCache(cache_dir)
        return cache.read(cache.fill(transfer, DATA, "train", rows, 32, 3, cut.tensors, view), name, np.arange(3, 6))

    first = view_rows(tmp_path / "a", np.arange(0, 6), "augment-3-0")
    # another cache, other batch companions: the same copies of images 3-5
    np.testing.assert_array_equal(view_rows(tmp_path / "b", np.arange(3, 9), "augment-3-0"), first)
    scale = np.abs(first).max()  # random-init activations are tiny: compare relative to their size
    assert not np.allclose(view_rows(tmp_path / "a", np.arange(0, 6), "augment-3-1") / scale, first / scale)
    assert not np.allclose(view_rows(tmp_path / "a", np.arange(0, 6), "plain") / scale, first / scale)


def test_cached_rows_cycle_views_by_epoch_and_shuffle_by_epoch(tmp_path):
    entries = []
    for view in range(2):
        entry = tmp_path / f"view{view}"
        store = TensorStore(entry / "x.npy", Layout(10, (1,), "float32"))
        store.create(needed=40)
        store.write(np.arange(10), np.arange(10, dtype=np.float32)[:, None] + 100 * view, 40, set())
        entries.append(entry)
    rows = CachedRows(entries, ["x"], np.arange(10), np.arange(10), 4, shuffle=True, seed=1)
    schedule = ViewSchedule(rows)

    def epoch(number):
        schedule.on_epoch_begin(number)
        return np.concatenate([batch["x"].numpy()[:, 0] for batch, _ in rows.dataset({"x": (1,)})])

    zero, one, two = epoch(0), epoch(1), epoch(2)
    assert sorted(zero) == list(range(10)) and sorted(one) == list(range(100, 110))
    assert sorted(two) == sorted(zero) and list(two) != list(zero)  # view 0 again, in a new order
    np.testing.assert_array_equal(epoch(2), two)  # an epoch's order follows its number: resume-safe


def _experiment(workdir, **overrides):
    config = make_config("smoke", {"image_size": 32, "train_size": 100, "test_size": 50, "batch_size": 25,
                                   "head_epochs": 1, "finetune_epochs": 3, "models": "efficientnet_lite0_finetuned",
                                   "finetune_layers": 20, "finetune_lr": 1e-3, "finetune_views": 2, **overrides})
    return Run(config, synthetic_dataset(seed=3), "none", workdir, "smoke", save_models=False)


@pytest.mark.slow
def test_stage_two_on_views_resumes_after_a_kill_as_if_never_stopped(tmp_path, monkeypatch):
    straight = run_all(_experiment(tmp_path / "straight"))["models"]["efficientnet_lite0_finetuned"]
    assert straight["stage2"]["views"] == 2
    log = (tmp_path / "straight" / "stages" / "efficientnet_lite0_finetuned" / "history.csv").read_text()
    assert [line.split(",")[-1] for line in log.split()[1:]] == ["0", "1", "0"]  # view per epoch

    original = ViewSchedule.on_epoch_begin

    def killed_in_epoch_two(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch, logs)

    monkeypatch.setattr(ViewSchedule, "on_epoch_begin", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run_all(_experiment(tmp_path / "killed"))
    monkeypatch.setattr(ViewSchedule, "on_epoch_begin", original)
    resumed = _experiment(tmp_path / "killed")
    results = run_all(resumed)["models"]["efficientnet_lite0_finetuned"]
    assert resumed.cache.computed == 0  # the views and the val/test prefix came from the cache
    assert results["history"]["val_loss"] == pytest.approx(straight["history"]["val_loss"], rel=1e-5)
    assert results["test_accuracy"] == straight["test_accuracy"]
