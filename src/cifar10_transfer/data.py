"""CIFAR-10 from every place users keep it, as uint8 arrays.

Sources, in the order `load_dataset` tries them:
1. a local directory (`data_dir`, else the CIFAR10_DIR environment variable) holding the
   official `cifar-10-python.tar.gz`, its extracted `cifar-10-batches-py/`, or an
   image-folder tree `train/<class>/*`, `test/<class>/*` (the directory or its single
   top-level subfolder may hold the layout; a .tar.gz of any layout works as well);
2. Keras's own download, `keras.datasets.cifar10.load_data()`;
3. `source="synthetic"`: generated, learnable images for offline demos and tests.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .publish import atomic_write

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
OFFICIAL_TARBALL = "cifar-10-python.tar.gz"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
HOW_TO_PROVIDE = ("provide CIFAR-10 in one of three ways: let Keras download it (needs internet), "
                  "pass --data-dir DIR / set CIFAR10_DIR to a local copy (official tarball, "
                  "cifar-10-batches-py/ or train/ and test/ image folders), or use --data synthetic")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test images (uint8, N x 32 x 32 x 3), integer labels, and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    description: str

    @property
    def is_synthetic(self) -> bool:
        return self.description.startswith("synthetic")

    def fingerprint(self) -> str:
        """sha256 of the arrays, so results name exactly the data they were computed on."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def load_dataset(source: str = "cifar10", data_dir: str | os.PathLike | None = None,
                 seed: int = 3) -> Dataset:
    """Load CIFAR-10 (`source="cifar10"`) or the synthetic stand-in (`source="synthetic"`).

    A local `data_dir` (or CIFAR10_DIR) wins over the Keras download. Raises UserError with
    one actionable line when no source works.
    """
    if source == "synthetic":
        return synthetic_dataset(seed=seed)
    if source != "cifar10":
        raise UserError(f"unknown data source {source!r}; choose cifar10 or synthetic.")
    data_dir = data_dir or os.environ.get("CIFAR10_DIR") or None
    if data_dir:
        return load_local(Path(data_dir))
    return _load_keras_download()


def _load_keras_download() -> Dataset:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # any network or cache failure ends in the same advice
        raise UserError(f"CIFAR-10 could not be downloaded ({type(exc).__name__}); {HOW_TO_PROVIDE}.") from exc
    return Dataset(x_train, y_train.reshape(-1).astype(np.int64), x_test,
                   y_test.reshape(-1).astype(np.int64), CLASS_NAMES,
                   "CIFAR-10 (official, via keras.datasets download)")


def load_local(path: Path) -> Dataset:
    """Load CIFAR-10 from a directory or archive in any of the supported layouts."""
    if not path.exists():
        raise UserError(f"data directory {path} does not exist; {HOW_TO_PROVIDE}.")
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise UserError(f"{path} is a file but not a .tar.gz archive; point --data-dir at a directory.")
        with tempfile.TemporaryDirectory(prefix="cifar10-") as tmp:
            safe_extract(path, Path(tmp))
            return _load_layout(Path(tmp), label=path.name)
    return _load_layout(path, label=f"{path.resolve().name}/")


def _load_layout(path: Path, label: str) -> Dataset:
    candidates = [path]
    children = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        candidates.append(children[0])
    for root in candidates:
        if (root / OFFICIAL_TARBALL).is_file():
            with tempfile.TemporaryDirectory(prefix="cifar10-") as tmp:
                safe_extract(root / OFFICIAL_TARBALL, Path(tmp))
                batches = _find_batches(Path(tmp))
                if batches is None:
                    raise UserError(f"{root / OFFICIAL_TARBALL} holds no {BATCHES_DIR}/; re-download it.")
                return _with_description(load_batches(batches), f"CIFAR-10 (official tarball, {label})")
        batches = _find_batches(root)
        if batches is not None:
            return _with_description(load_batches(batches), f"CIFAR-10 (official batches, {label})")
        if (root / "train").is_dir() and (root / "test").is_dir():
            return load_image_folders(root, location=label)
    if not children:
        raise UserError(f"data directory {path} is empty; {HOW_TO_PROVIDE}.")
    raise UserError(f"data directory {path} holds none of the known layouts "
                    f"({OFFICIAL_TARBALL}, {BATCHES_DIR}/, train/ + test/ folders).")


def _find_batches(root: Path) -> Path | None:
    for candidate in (root, root / BATCHES_DIR):
        if (candidate / "data_batch_1").is_file():
            return candidate
    return None


def _with_description(dataset: Dataset, description: str) -> Dataset:
    return Dataset(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test,
                   dataset.class_names, description)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive with the standard library's `data` extraction filter.

    Members that would escape `dest` (absolute paths, `..`, links pointing outside) and
    device files are refused; truncated or corrupt archives raise UserError.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter=_refuse_absolute_then_data_filter)
    except tarfile.FilterError as exc:
        raise UserError(f"{archive} has an unsafe member ({exc}); refusing to extract it.") from exc
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"{archive} is truncated or corrupt ({exc}); download it again.") from exc


def _refuse_absolute_then_data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    # The `data` filter would quietly strip a leading "/"; an absolute member name means the
    # archive was not made for us, so refuse it outright.
    if member.name.startswith(("/", os.sep)):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; any other global is refused, so no code runs."""

    # numpy's array reconstruction, plus _codecs.encode (a pure function) because Python 3
    # writes bytes as `_codecs.encode(text, "latin1")` in protocol-2 pickles.
    ALLOWED = frozenset({("numpy", "ndarray"), ("numpy", "dtype"),
                         ("numpy.core.multiarray", "_reconstruct"),
                         ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")})

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def read_batch_file(path: Path) -> dict:
    """Read one official CIFAR-10 batch file (a Python 2 pickle) without executing code."""
    try:
        with open(path, "rb") as handle:
            content = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path} was refused or is corrupt ({exc}); use an official CIFAR-10 copy.") from exc
    except Exception as exc:  # truncated or garbage bytes surface as many exception types
        raise UserError(f"{path} is corrupt ({type(exc).__name__}); download CIFAR-10 again.") from exc
    if not isinstance(content, dict):
        raise UserError(f"{path} is not a CIFAR-10 batch (holds {type(content).__name__}, not a dict).")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in content.items()}


def _batch_arrays(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch_file(path)
    if "data" not in batch or "labels" not in batch:
        raise UserError(f"{path} lacks the 'data' or 'labels' key; it is not a CIFAR-10 batch.")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise UserError(f"{path}: data has shape {data.shape} and dtype {data.dtype}; expected N x 3072 uint8.")
    if labels.shape != (data.shape[0],):
        raise UserError(f"{path}: {labels.size} labels for {data.shape[0]} images.")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise UserError(f"{path}: labels outside 0..{n_classes - 1}; batches.meta and the batch disagree.")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def load_batches(directory: Path) -> Dataset:
    """Load data_batch_1..5 (in that order) and test_batch, with class names from batches.meta."""
    for name in (*TRAIN_BATCHES, "test_batch", "batches.meta"):
        if not (directory / name).is_file():
            raise UserError(f"{directory} lacks {name}; the CIFAR-10 batches are incomplete.")
    meta = read_batch_file(directory / "batches.meta")
    if "label_names" not in meta:
        raise UserError(f"{directory / 'batches.meta'} lacks label_names.")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"])
    parts = [_batch_arrays(directory / name, len(names)) for name in TRAIN_BATCHES]
    x_test, y_test = _batch_arrays(directory / "test_batch", len(names))
    x_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts])
    used = np.unique(y_train).size
    if used != len(names):
        raise UserError(f"batches.meta names {len(names)} classes but the labels use {used}.")
    return Dataset(x_train, y_train, x_test, y_test, names,
                   f"CIFAR-10 (official batches, {Path(directory).resolve().name}/)")


def load_image_folders(root: Path, location: str | None = None) -> Dataset:
    """Load `train/<class>/*` and `test/<class>/*`; classes are the sorted folder names.

    `location` names the data in the description (default: the folder's name, never its
    absolute path, which would mean nothing on a reader's machine).
    Grayscale, RGBA and palette images become RGB; images of another size are resized to
    32x32 with one warning that counts them.
    """
    splits = {}
    for split in ("train", "test"):
        class_dirs = sorted(p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith("."))
        splits[split] = class_dirs
    train_names = [p.name for p in splits["train"]]
    if not train_names:
        raise UserError(f"{root / 'train'} has no class folders.")
    if train_names != [p.name for p in splits["test"]]:
        raise UserError(f"train and test class folders differ under {root}: "
                        f"{sorted(set(train_names) ^ {p.name for p in splits['test']})}.")
    listing = {}
    for split, class_dirs in splits.items():
        files, labels = [], []
        for label, class_dir in enumerate(class_dirs):
            members = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
            if not members:
                raise UserError(f"class folder {class_dir} is empty.")
            files += members
            labels += [label] * len(members)
        listing[split] = (files, np.asarray(labels, dtype=np.int64))
    every_file = listing["train"][0] + listing["test"][0]
    jpeg = sum(path.suffix.lower() in (".jpg", ".jpeg") for path in every_file) * 2 > len(every_file)
    description = f"CIFAR-10 ({'JPEG copy, image folders' if jpeg else 'image folders'}, " \
                  f"{location or root.resolve().name + '/'})"
    decoded = _decoded_path(root, every_file)
    if decoded.is_file():
        with np.load(decoded) as stored:
            arrays = {split: (stored[f"x_{split}"], listing[split][1]) for split in listing}
            resized = int(stored["resized"])
    else:
        arrays, resized = {}, 0
        for split, (files, labels) in listing.items():
            # Decode straight into one preallocated array: no list of 60,000 small arrays and no
            # second full copy from stacking them.
            images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
            with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
                resized += sum(pool.map(lambda item: read_image(item[1], images[item[0]]), enumerate(files)))
            arrays[split] = (images, labels)
        _keep_decoded(decoded, arrays, resized)
    if resized:
        warnings.warn(f"{resized} images were not 32x32 and were resized to 32x32.", stacklevel=2)
    return Dataset(*arrays["train"], *arrays["test"], tuple(train_names), description)


def decoded_cache_dir() -> Path:
    """Where decoded image folders are kept: $CIFAR10_TRANSFER_CACHE, else $XDG_CACHE_HOME or
    ~/.cache, then cifar10-transfer/; under it, image-folders/."""
    base = os.environ.get("CIFAR10_TRANSFER_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifar10-transfer"
    return root / "image-folders"


def _decoded_path(root: Path, files: list[Path]) -> Path:
    """The decoded copy of exactly these files: keyed by each one's relative path, size and mtime."""
    listing = hashlib.sha256()
    for path in files:
        status = path.stat()
        listing.update(f"{path.relative_to(root)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return decoded_cache_dir() / f"{listing.hexdigest()[:24]}.npz"


def _keep_decoded(path: Path, arrays: dict, resized: int) -> None:
    # Decoding 60,000 JPEGs took about 17 s on 2 cores, and each notebook and test loads them again.
    def save(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, resized=resized, **{f"x_{split}": x for split, (x, _) in arrays.items()})

    try:
        atomic_write(path, save)
    except OSError as exc:
        warnings.warn(f"could not keep decoded images in {path.parent} ({exc.strerror}); "
                      "the next load decodes them again.", stacklevel=3)


def read_image(path: Path, out: np.ndarray) -> bool:
    """Decode `path` as 32x32 RGB into `out`; returns whether it had to be resized."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode != "RGB":  # converting an RGB image would only copy it
                image = image.convert("RGB")
            resized = image.size != (32, 32)
            if resized:
                image = image.resize((32, 32), Image.Resampling.BILINEAR)
            out[...] = np.asarray(image, dtype=np.uint8)
            return resized
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable image ({type(exc).__name__}); remove or replace it.") from exc


def synthetic_dataset(seed: int = 3, train_per_class: int = 1200, test_per_class: int = 200) -> Dataset:
    """Procedurally generated, learnable 10-class 32x32 RGB images, deterministic from `seed`.

    Each class is a stripe orientation and frequency on a class-tinted background, with
    random phase, colour jitter and pixel noise: easy for a CNN, not trivial for one pixel.
    """
    rng = np.random.default_rng(seed)
    palette = rng.uniform(40, 215, size=(10, 3))

    def make(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        n = labels.size
        yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
        angle = ((labels % 5) * (np.pi / 5)).astype(np.float32)
        frequency = (0.25 + 0.2 * (labels // 5)).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        wave = np.sin(frequency[:, None, None] * (np.cos(angle)[:, None, None] * xx
                                                   + np.sin(angle)[:, None, None] * yy) + phase[:, None, None])
        tint = (palette[labels] + rng.normal(0, 12, size=(n, 3))).astype(np.float32)
        # Uniform pixel noise of standard deviation 18, in float32: the noise is most of the
        # work, and this draws it about 8x faster than float64 normal noise did here.
        images = rng.random((n, 32, 32, 3), dtype=np.float32)
        images -= 0.5
        images *= 18 * np.sqrt(12, dtype=np.float32)
        images += tint[:, None, None, :]
        images += 60 * wave[..., None]
        return np.clip(images, 0, 255, out=images).astype(np.uint8), labels.astype(np.int64)

    x_train, y_train = make(train_per_class)
    x_test, y_test = make(test_per_class)
    return Dataset(x_train, y_train, x_test, y_test, tuple(f"synthetic_{i}" for i in range(10)),
                   f"synthetic (generated stand-in, seed {seed}; not CIFAR-10)")
