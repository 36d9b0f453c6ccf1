"""Shared fixtures: tiny CIFAR-10 copies in every official layout, and the real copy in CI."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_BATCH = 20  # images per official batch file in the fake copies (2 per class)


def fake_batch(index: int, n: int = PER_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel encodes (batch, position), so order is checkable; labels cycle 0..9."""
    images = np.random.default_rng(index).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = index
    images[:, 0, 0, 1] = np.arange(n)
    return images, np.arange(n) % 10


def write_batch(path: Path, images: np.ndarray, labels, extra: dict | None = None) -> None:
    """A batch file as the official release stores it: a protocol-2 pickle with bytes keys."""
    content = {b"batch_label": path.name.encode(), b"labels": list(map(int, labels)),
               b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
               b"filenames": [f"{i}.png".encode() for i in range(len(images))], **(extra or {})}
    path.write_bytes(pickle.dumps(content, protocol=2))


def write_official_batches(directory: Path) -> Path:
    """data_batch_1..5, test_batch (index 6) and batches.meta, in the official pickle layout."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write_batch(directory / f"data_batch_{i}", *fake_batch(i))
    write_batch(directory / "test_batch", *fake_batch(6))
    meta = {b"label_names": [name.encode() for name in CLASSES], b"num_cases_per_batch": PER_BATCH,
            b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return directory


def write_official_tarball(path: Path) -> Path:
    """cifar-10-python.tar.gz holding cifar-10-batches-py/, as downloaded from the dataset's site."""
    staging = path.parent / "staging"
    write_official_batches(staging / "cifar-10-batches-py")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path


def write_image_folders(root: Path, per_class: int = 3, suffix: str = ".png") -> Path:
    """train/<class>/*.png and test/<class>/*.png with a constant colour per class."""
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.full((32, 32, 3), label * 20 + i, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}{suffix}")
    return root


def infer(model, inputs) -> np.ndarray:
    """A model's inference outputs, called eagerly: on a test's dozen images this skips the seconds
    (2-5 s here for a ResNet50) that `predict` spends tracing each new model's graph first.
    `inputs`: an array, a list or dict of arrays, or a tf.data dataset of (inputs, labels) batches."""
    import keras

    if hasattr(inputs, "element_spec"):
        return np.concatenate([infer(model, batch) for batch, _ in inputs])
    return keras.ops.convert_to_numpy(model(inputs, training=False))


def pytest_configure(config) -> None:
    """Give each pytest-xdist worker its share of the cores as TensorFlow threads.

    TensorFlow gives every process a thread per core, so 2 workers on 2 cores fought over 4+
    threads. One thread each (set before any test module imports TensorFlow, and inherited by
    the CLI and notebook processes that tests start) cut the suite's summed test time from
    628-658 s to 580-590 s here, its wall time from 324-340 s to 300-304 s (two runs each).
    """
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers: TensorFlow's default
        return
    share = str(max(1, len(os.sched_getaffinity(0)) // int(config.workerinput["workercount"])))
    for variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(variable, share)


@pytest.fixture(scope="session", autouse=True)
def decoded_images_cache(pytestconfig, tmp_path_factory) -> Path:
    """One cache of decoded image folders, out of the user's home; the notebooks and CLI processes
    that tests start inherit it. It lies in pytest's cache directory (a temporary one where the
    cache plugin is off), so that the second test target finds the real copy decoded by the first:
    decoding its 60,000 JPEGs takes a worker about 20 s, and the cache is keyed by every file's
    path, size and modification time (`data._decoded_path`)."""
    cache = getattr(pytestconfig, "cache", None)
    path = Path(cache.mkdir("decoded-images")) if cache else tmp_path_factory.mktemp("decoded")
    os.environ["CIFAR10_TRANSFER_CACHE"] = str(path)
    return path / "image-folders"


@pytest.fixture
def official_dir(tmp_path) -> Path:
    return write_official_batches(tmp_path / "cifar-10-batches-py")


@pytest.fixture
def image_root(tmp_path) -> Path:
    return write_image_folders(tmp_path / "folders")


def in_ci() -> bool:
    """CI is set (CI=true, as .ci/run and hosted CI set it); CI=false, 0 or empty is not CI."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real CIFAR-10 copy from CIFAR10_DIR. Outside CI it may be absent (skip); in CI it must exist."""
    path = os.environ.get("CIFAR10_DIR")
    if path and Path(path).is_dir():
        return Path(path)
    if in_ci():
        pytest.fail("CI=true but CIFAR10_DIR does not point at the real CIFAR-10 copy; see .ci/run.")
    pytest.skip("real CIFAR-10 not available: set CIFAR10_DIR (CI extracts ../shared/data/cifar10-jpeg.tar.gz)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI no test may pass by being skipped: a skip (of any cause, not only the real data's) fails."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI={os.environ['CI']}, where every test must run: {reason}"


# The modules that take longest, first. pytest-xdist hands whole modules (--dist loadscope)
# to its workers in collection order (the Makefile passes --no-loadscope-reorder), so a long
# module never starts last on one worker while the others idle. From --durations of both
# targets: in `make test` test_real_data.py's smoke run takes one worker while the other
# starts on test_models.py; `make test-slow` starts with test_real_data.py (the runs that read
# the smoke run `make test` left in pytest's cache, and a random-init head run) and
# test_bench_backbones.py. Each target holds only some of
# these modules' tests, and a module a target does not select is simply absent.
LONGEST_FIRST = ("test_real_data.py", "test_bench_backbones.py", "test_stages.py", "test_resume.py", "test_models.py",
                 "test_bench.py", "test_cli.py", "test_curves.py", "test_prefix.py", "test_training.py",
                 "test_predict.py", "test_plots_report.py", "test_cache_integrity.py", "test_distributed.py",
                 "test_features.py", "test_efficientnet_lite.py")


def pytest_collection_modifyitems(items: list) -> None:
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: tests keep their order inside a module
