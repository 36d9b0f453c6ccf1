import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import infer

from cifar10_transfer.backbones import load_backbone, preprocess_for
from cifar10_transfer.custom_layers import SmoothedSparseCrossentropy, StochasticDepth
from cifar10_transfer.errors import UserError
from cifar10_transfer.models import (MODEL_REGISTRY, build_cnn, build_model, build_resnet50, build_resnet_scratch,
                                     build_transfer, compile_classifier, save_backbone_weights, unfreeze)
from cifar10_transfer.recipe import ScratchRecipe, Stage2Recipe
from cifar10_transfer.registry import BACKBONES
from cifar10_transfer.pipelines import transfer_dataset
from cifar10_transfer.training import scratch_optimizer

SOURCE = Path(__file__).resolve().parents[1] / "src" / "cifar10_transfer"


SCRATCH = ("cnn", "resnet_scratch")  # the models trained from scratch: plain Keras models at 32x32


def _classifier(name):
    built = build_model(name) if name in SCRATCH else build_model(name, image_size=32, weights="none")
    return built if name in SCRATCH else built.model


def _trainable_count(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_registry_models_run_and_learn_on_tiny_inputs(name):
    keras.utils.set_random_seed(0)
    model = _classifier(name)
    if name not in SCRATCH:
        model.layers[1].trainable = True  # the backbone, so every weight should get a gradient
    x = tf.random.uniform((2, 32, 32, 3))
    with tf.GradientTape() as tape:
        probabilities = model(x, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(tf.constant([1, 2]), probabilities)
    assert probabilities.shape == (2, 10)
    assert not np.isnan(probabilities.numpy()).any()
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)
    gradients = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.isfinite(np.asarray(g)).all() for g in gradients)
    nonzero = [float(tf.reduce_sum(tf.abs(g))) > 0 for g in gradients]
    # Random-init ReLU6 networks (EfficientNet-Lite0) saturate a few units on noise; nearly all must learn.
    assert all(nonzero[-4:]) and sum(nonzero) >= 0.95 * len(nonzero)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_entry_matches_the_model_and_unfreezes_its_default_depth(name):
    spec = BACKBONES[name]
    transfer = build_transfer(name, 32, "none")
    assert len(transfer.backbone.layers) == spec.layers
    assert transfer.features.output.shape == (None, spec.feature_dim)
    assert transfer.model.output.shape == (None, 10)
    head_only = _trainable_count(transfer.model)
    assert head_only == spec.feature_dim * 256 + 256 + 256 * 10 + 10  # Dense(256) + Dense(10)
    unfrozen = unfreeze(transfer, spec.stage2)
    last = transfer.backbone.layers[-spec.stage2.layers:]
    expected = [l.name for l in last if not isinstance(l, keras.layers.BatchNormalization) and l.weights]
    assert unfrozen == expected and expected
    gained = sum(int(np.prod(w.shape)) for l in last if l.name in expected for w in l.weights)
    assert _trainable_count(transfer.model) == head_only + gained
    assert all(not l.trainable for l in transfer.backbone.layers if isinstance(l, keras.layers.BatchNormalization))
    assert float(transfer.model.optimizer.learning_rate) == pytest.approx(spec.stage2.learning_rate)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_preprocessing_maps_pixels_to_the_backbones_input_range(name):
    pixels = tf.constant([[[[0.0, 127.0, 255.0]]]])
    out = preprocess_for(name)(pixels).numpy().ravel()
    low, high = {"resnet50": (-124.0, 152.0), "efficientnet_lite0": (-1.0, 1.0),
                 "efficientnetb0": (0.0, 255.0)}[name]
    assert low <= out.min() and out.max() <= high
    assert out.max() - out.min() > 0.5 * (high - low)  # a real rescaling, not a constant


def test_parameter_counts_match_the_study():
    assert build_cnn().count_params() == 356_810
    transfer = build_resnet50(224, "none")
    assert transfer.model.count_params() == 24_114_826
    assert _trainable_count(transfer.model) == 527_114


def test_the_resnet_from_scratch_is_resnet9_at_a_given_width():
    for width, params, trainable in ((16, 414_074, 412_954), (64, 6_577_610, 6_573_130)):  # 64: ResNet-9's size
        model = build_resnet_scratch(width)
        assert (model.count_params(), _trainable_count(model)) == (params, trainable)
    assert model.input.shape == (None, 32, 32, 3) and model.output.shape == (None, 10)
    convs = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs == [64, 128, 128, 128, 256, 512, 512, 512]
    assert len([l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]) == len(convs)


def test_a_few_sgd_steps_of_the_resnet_from_scratch_lower_its_loss():
    keras.utils.set_random_seed(0)
    model = build_resnet_scratch(8)
    recipe = ScratchRecipe(width=8)
    compile_classifier(model, scratch_optimizer(recipe, 16, 4), False, recipe.label_smoothing)
    x = np.random.default_rng(0).uniform(0, 1, (16, 32, 32, 3)).astype("float32")
    y = np.arange(16) % 10
    loss = lambda: float(model.loss(y, model(x, training=True)))  # noqa: E731 -- with batch statistics
    before = loss()
    model.fit(x, y, batch_size=16, epochs=4, verbose=0)  # 4 steps: the rate rises from 0, then decays
    assert loss() < before
    assert int(model.optimizer.iterations) == 4


def test_weight_decay_spares_batchnorm_and_biases():
    model = build_resnet_scratch(4)
    optimizer = scratch_optimizer(ScratchRecipe(), 64, 10)
    optimizer.build(model.trainable_variables)
    decayed = {v.path.rsplit("/", 1)[-1] for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert decayed == {"kernel"}
    assert optimizer.nesterov and optimizer.momentum == 0.9 and optimizer.weight_decay == 5e-3


def test_unfreeze_makes_exactly_the_last_non_batchnorm_layers_trainable():
    transfer = build_resnet50(32, "none")
    unfrozen = unfreeze(transfer, Stage2Recipe(30, 1e-5))
    last = transfer.backbone.layers[-30:]
    expected = [l.name for l in last if not isinstance(l, keras.layers.BatchNormalization) and l.weights]
    assert unfrozen == expected and len(expected) == 9
    trainable = {l.name for l in transfer.backbone.layers if l.trainable and l.weights}
    assert trainable == set(expected)


def test_unfreeze_trains_batchnorm_only_among_the_last_layers_when_asked():
    transfer = build_resnet50(32, "none")
    unfrozen = unfreeze(transfer, Stage2Recipe(30, 1e-5, batchnorm="train"))
    last = transfer.backbone.layers[-30:]
    assert unfrozen == [l.name for l in last if l.weights]
    batchnorms = [l for l in transfer.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert [l.name for l in batchnorms if l.trainable] == [l.name for l in last if l in batchnorms]
    assert len([l for l in batchnorms if l.trainable]) == 9  # conv5_block1_2_bn to conv5_block3_3_bn


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_a_training_step_moves_batchnorm_statistics_only_when_batchnorm_trains(train_batchnorm):
    keras.utils.set_random_seed(0)
    transfer = build_transfer("efficientnet_lite0", 32, "none")
    unfreeze(transfer, Stage2Recipe(20, 1e-3, batchnorm="train" if train_batchnorm else "frozen"), False)
    batchnorms = [l for l in transfer.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    before = [keras.ops.convert_to_numpy(l.moving_variance).copy() for l in batchnorms]
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    transfer.model.fit(images, np.arange(8) % 10, epochs=1, verbose=0)
    moved = [not np.allclose(keras.ops.convert_to_numpy(l.moving_variance), b) for l, b in zip(batchnorms, before)]
    last = {l.name for l in transfer.backbone.layers[-20:]}
    in_range = [l.name in last for l in batchnorms]
    assert moved == [train_batchnorm and inside for inside in in_range]
    assert any(in_range)


def test_stochastic_depth_drops_whole_branches_only_while_a_trainable_layer_trains():
    layer = StochasticDepth(0.5, rate=0.8)  # drops a sample's branch with probability 0.4
    branch, shortcut = np.full((2000, 2, 2, 3), 3.0, "float32"), np.ones((2000, 2, 2, 3), "float32")
    trained = keras.ops.convert_to_numpy(layer([branch, shortcut], training=True))
    per_sample = {tuple(np.unique(sample)) for sample in trained}
    assert per_sample == {(1.0,), (1.0 + 3.0 / 0.6,)}  # kept branches scaled by 1 / (1 - 0.4)
    assert abs((trained[:, 0, 0, 0] == 1.0).mean() - 0.4) < 0.04
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([branch, shortcut], training=False)), 4.0)
    layer.trainable = False  # a frozen block stays deterministic, as frozen BatchNorm does
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([branch, shortcut], training=True)), 4.0)


def test_unfreeze_rates_efficientnet_lite0_blocks_by_depth_and_refuses_other_backbones():
    transfer = build_transfer("efficientnet_lite0", 32, "none")
    unfreeze(transfer, Stage2Recipe(140, 1e-3, drop_path=0.2))
    blocks = [l for l in transfer.backbone.layers if isinstance(l, StochasticDepth)]
    assert len(blocks) == 9  # the blocks whose stride is 1 and filters unchanged
    assert [l.name for l in blocks][:2] == ["block2_add", "block4_add"]
    assert [round(l.rate * l.depth_fraction, 4) for l in blocks][:2] == [0.025, 0.05]  # 0.2 * 2/16, 0.2 * 4/16
    assert len(transfer.backbone.layers) == BACKBONES["efficientnet_lite0"].layers
    with pytest.raises(UserError, match="must lie in"):
        unfreeze(transfer, Stage2Recipe(140, 1e-3, drop_path=1.0))
    with pytest.raises(UserError, match="needs stochastic-depth blocks, which ResNet50 lacks"):
        unfreeze(build_resnet50(32, "none"), Stage2Recipe(30, 1e-5, drop_path=0.1))


def test_stochastic_depth_makes_training_passes_random_and_inference_exact():
    keras.utils.set_random_seed(0)
    transfer = build_transfer("efficientnet_lite0", 32, "none")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    inference = keras.ops.convert_to_numpy(transfer.features(images, training=False))
    unfreeze(transfer, Stage2Recipe(140, 1e-3, drop_path=0.5))
    passes = [keras.ops.convert_to_numpy(transfer.features(images, training=True)) for _ in range(2)]
    assert np.abs(passes[0] - passes[1]).max() > 0.01 * np.abs(passes[0]).max() > 0  # random init: tiny features
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(transfer.features(images, training=False)), inference)


@pytest.mark.parametrize("n, message", [(0, "finetune_layers=0 must be positive"),
                                        (176, "larger than the 175 layers of the ResNet50 backbone")])
def test_unfreeze_refuses_bad_layer_counts(n, message):
    with pytest.raises(UserError, match=message):
        unfreeze(build_resnet50(32, "none"), Stage2Recipe(n, 1e-5))


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    labels = np.array([0, 1])
    targets = np.full((2, 3), 0.1 / 3) + np.eye(3)[labels] * 0.9  # 0.9 + 0.1/3 on the label
    expected = -(targets * np.log(probabilities)).sum(axis=1).mean()
    assert float(SmoothedSparseCrossentropy(0.1)(labels, probabilities)) == pytest.approx(expected, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    assert float(SmoothedSparseCrossentropy(0.0)(labels, probabilities)) == pytest.approx(float(plain), rel=1e-5)


def test_a_model_compiled_with_label_smoothing_saves_and_loads(tmp_path):
    model = build_cnn()
    compile_classifier(model, 1e-3, False, label_smoothing=0.2)
    model.save(tmp_path / "cnn.keras")
    loaded = keras.saving.load_model(tmp_path / "cnn.keras")
    assert isinstance(loaded.loss, SmoothedSparseCrossentropy) and loaded.loss.smoothing == 0.2


def test_cached_head_equals_end_to_end_model():
    keras.utils.set_random_seed(1)
    transfer = build_resnet50(48, "none")
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    data = transfer_dataset(x, np.zeros(6), 48, 3, transfer.preprocess)
    features = infer(transfer.features, data)
    via_cache = infer(transfer.head, features)
    end_to_end = infer(transfer.model, data)
    np.testing.assert_allclose(via_cache, end_to_end, rtol=1e-5, atol=1e-6)
    direct = keras.layers.GlobalAveragePooling2D()(transfer.backbone(next(iter(data))[0], training=False))
    np.testing.assert_allclose(features[:3], direct.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_weights_round_trip_through_a_local_file(tmp_path, name):
    keras.utils.set_random_seed(2)
    original = build_transfer(name, 32, "none")
    path = save_backbone_weights(original.backbone, tmp_path / f"{name}_notop.weights.h5")
    loaded = build_transfer(name, 32, str(path))
    for a, b in zip(original.backbone.weights, loaded.backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bad_weights_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_resnet50(32, str(tmp_path / "missing.h5"))
    other = tmp_path / "cnn.weights.h5"
    build_cnn().save_weights(other)
    with pytest.raises(UserError, match="does not hold ResNet50"):
        build_resnet50(32, str(other))


def test_weights_a_backbone_plainly_cannot_get_are_refused_without_loading(monkeypatch, tmp_path):
    from cifar10_transfer import weights

    weights.check_weights_available(BACKBONES["efficientnet_lite0"], "imagenet")  # installed with pip
    weights.check_weights_available(BACKBONES["resnet50"], "none")
    with pytest.raises(UserError, match="does not exist"):
        weights.check_weights_available(BACKBONES["resnet50"], str(tmp_path / "missing.weights.h5"))
    monkeypatch.setattr(weights, "imagenet_status", lambda backbone: "unavailable offline")
    with pytest.raises(UserError, match=r"ResNet50 .* could not be loaded \(not cached, storage.googleapis.com "
                                        r"unreachable\); put resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 in"):
        weights.check_weights_available(BACKBONES["resnet50"], "imagenet")


def test_unreachable_imagenet_weights_name_the_cache_and_the_alternative(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(keras.applications, "ResNet50", lambda *a, weights=None, **k: offline()
                        if weights == "imagenet" else None)
    with pytest.raises(UserError) as error:
        build_resnet50(32, "imagenet")
    message = str(error.value)
    assert "--weights PATH" in message and "models" in message and "\n" not in message


def test_a_legacy_h5_file_like_the_official_download_loads(tmp_path):
    """The official ImageNet file is a legacy HDF5 weights file; one of the same format loads."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format  # writes the pre-Keras-3 format, test only

    keras.utils.set_random_seed(3)
    original = build_resnet50(32, "none")
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, original.backbone)
    loaded = build_resnet50(32, str(path))
    for a, b in zip(original.backbone.weights, loaded.backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_random_init_differs_from_imagenet_for_the_pip_backbone():
    spec = BACKBONES["efficientnet_lite0"]
    pretrained, random = load_backbone(spec, 32, "imagenet"), load_backbone(spec, 32, "none")
    kernel = lambda model: model.get_layer("stem_conv").kernel.numpy()  # noqa: E731
    assert not np.allclose(kernel(pretrained), kernel(random))


def test_no_module_outside_the_registry_tests_for_a_backbone_name():
    pattern = re.compile(r"""(==|!=|startswith\(|\bin\s*\(?)\s*["'](resnet50|efficientnet)""")
    offenders = [f"{path.name}:{number}" for path in SOURCE.glob("*.py")
                 if path.name not in ("registry.py", "backbones.py", "study.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_a_compiled_classifier_traces_its_training_step_once():
    """Keras would make Adam's slots and the accuracy's counters in the first trace and so trace twice;
    `compile_classifier` makes them first (a second trace of a backbone costs seconds on a CPU)."""
    keras.utils.set_random_seed(0)
    model = build_cnn()
    compile_classifier(model, 1e-3)
    traces, step = [], model.train_step
    model.train_step = lambda data: traces.append(data) or step(data)
    images = np.random.default_rng(0).uniform(0, 1, (20, 32, 32, 3)).astype("float32")
    model.fit(images, np.arange(20) % 10, batch_size=8, epochs=2, verbose=0)  # a short last batch too
    assert len(traces) == 1
