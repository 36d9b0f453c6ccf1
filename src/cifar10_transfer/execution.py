"""How a run executes on its hardware: precision policy, XLA, distribution strategy and seeding."""

from __future__ import annotations

import contextlib
import os

import keras
import tensorflow as tf

from .errors import UserError
from .provenance import cpu_isa
from .registry import Backbone


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """Compute capability of every visible GPU, e.g. [(9, 0)] on an H100."""
    capabilities = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


def resolve_precision(setting: str, backbone: Backbone | None, gpus: list[tuple[int, int]] | None = None,
                      flags: set[str] | None = None) -> str:
    """The Keras dtype policy for a stage under the `precision` setting (`backbone` None: a model
    trained from scratch); `precision_choice` says why."""
    return precision_choice(setting, backbone, gpus, flags)[0]


def precision_choice(setting: str, backbone: Backbone | None, gpus: list[tuple[int, int]] | None = None,
                     flags: set[str] | None = None) -> tuple[str, str]:
    """(policy, reason) of a stage under the `precision` setting, the reason as results.json records it.

    `auto` picks mixed_float16 on GPUs with tensor cores (compute capability 7.0 or newer)
    and float32 on older ones. On CPUs with native bfloat16 (avx512_bf16 or AMX) it picks
    mixed_bfloat16 only for backbones whose registry entry says `make bench` measured it
    faster (ResNet50 yes; EfficientNet-Lite0's depthwise convolutions ran slower), float32
    otherwise; without native bfloat16, float32 (bfloat16 is emulated there). The models trained
    from scratch stay float32 under `auto`: bfloat16 cost the CNN accuracy in `make bench`, and
    a model this small gains little speed from lower precision.
    """
    if setting != "auto":
        return setting, f"set: precision={setting}"
    if backbone is None:
        return "float32", "auto: float32 for a model trained from scratch (bfloat16 cost the CNN accuracy, make bench)"
    gpus = gpu_compute_capabilities() if gpus is None else gpus
    flags = set(cpu_isa()) if flags is None else flags
    if gpus:
        if all(cap >= (7, 0) for cap in gpus):
            return "mixed_float16", "auto: mixed_float16 on GPUs with tensor cores (compute capability 7.0 or newer)"
        return "float32", "auto: float32 on a GPU older than compute capability 7.0 (no tensor cores)"
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if not native:
        return "float32", "auto: float32 on a CPU without native bfloat16 (no avx512_bf16 or amx_bf16)"
    if backbone.cpu_bfloat16:
        return "mixed_bfloat16", (f"auto: mixed_bfloat16 on a CPU with {', '.join(native)}, where make bench "
                                  f"measured it faster than float32 for {backbone.label}")
    return "float32", (f"auto: float32 on a CPU with {', '.join(native)}: make bench measured bfloat16 slower "
                       f"for {backbone.label}")


@contextlib.contextmanager
def precision_policy(policy: str):
    """Build models under `policy`, restoring the previous global policy afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_jit(setting: str, deterministic: bool) -> bool:
    """XLA compilation: `auto` turns it on where GPUs are visible and determinism is off.

    Keras disables XLA under TensorFlow op determinism, so `deterministic=True` means no XLA.
    On the 2-core CPU of `make bench` XLA changed CNN throughput little
    (benchmarks/results/latest.json), so `auto` leaves it off on CPUs.
    """
    if setting == "auto":
        return bool(tf.config.list_physical_devices("GPU")) and not deterministic
    return setting == "on"


def make_strategy(setting: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for `setting`.

    `auto`: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy with more
    than one GPU, the default strategy otherwise. The dataset's batch size is the global
    batch size, split across replicas.
    """
    if setting == "auto":
        if os.environ.get("TF_CONFIG"):
            setting = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            setting = "mirrored"
        else:
            setting = "default"
    if setting == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("strategy=multi_worker needs the TF_CONFIG environment variable; see the README.")
        return _MultiWorkerStrategy()
    if setting == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with a `reduce` that Keras 3.15's `fit` can use.

    With two or more workers, Keras reduces a whole (images, labels) batch before building
    the model, and each epoch's scalar metrics with `axis=0`; the collective `reduce` takes
    neither. Reducing leaf by leaf, scalars across workers only, gives every worker the
    same logs, so callbacks such as ReduceLROnPlateau decide alike on all of them.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super(_MultiWorkerStrategy, self)

        def reduce_leaf(leaf):
            rank = self.experimental_local_results(leaf)[0].shape.rank
            return parent.reduce(reduce_op, leaf, None if rank == 0 else axis)

        return tf.nest.map_structure(reduce_leaf, value)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, make TensorFlow ops deterministic.

    Op determinism then holds for the rest of the process: TensorFlow has no public switch back.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
