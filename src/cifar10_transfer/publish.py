"""Run directories, the one-run-at-a-time lock, and atomic publishing.

A run works in `OUT/.runs/<timestamp>/`. Only when it succeeds are its outputs moved
into `OUT/results`, `OUT/images` and `OUT/presentation` with renames, so a failed or
interrupted run leaves the published files as they were.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError

RUNS_DIR = ".runs"
RUN_FILE = "run.json"  # the arguments of a run, so that --resume can check it continues the same run
COMPLETE_FILE = "complete"
RUN_STAMP = "%Y%m%dT%H%M%S.%fZ"  # a run directory's name: the UTC time its run started
MODELS_DIR = "models"  # each trained stage for `predict`, published to OUT/models (not committed: large)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call `write(temporary_path)` beside `path`, then rename it onto `path`; returns the path.

    The temporary file lives in the same directory, so os.replace is an atomic rename: a
    reader sees the old file or the new one, never half of one, even if the process dies.
    It ends like `path`, because some writers (Keras's `save_weights`) check the suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(str(temporary))
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes: what a card records, so that reuse can verify them."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text or bytes to `path` atomically (see `atomic_write`)."""
    payload = data.encode() if isinstance(data, str) else data
    return atomic_write(path, lambda temporary: Path(temporary).write_bytes(payload))


class RunLock:
    """An exclusive lock on an output directory; a second run into it is refused.

    The lock is an flock on `OUT/.runs/lock`: the kernel releases it when the process
    ends, even on SIGKILL, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, out: Path):
        self.path = Path(out) / RUNS_DIR / "lock"

    def __enter__(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a+")
        except OSError as exc:
            raise UserError(f"cannot write to output directory {self.path.parent.parent} ({exc.strerror}); "
                            "choose another with --out.") from exc
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._handle.close()
            raise UserError(f"another run is writing to {self.path.parent.parent}; wait for it "
                            "to finish or use another --out.") from exc
        return self

    def __exit__(self, *exc_info) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


def start_run(out: Path, arguments: dict, resume: bool) -> Path:
    """The working directory of this run: a new one, or with `resume` the latest unfinished one.

    Resuming checks that the arguments match the interrupted run's.
    """
    runs = Path(out) / RUNS_DIR
    if resume:
        unfinished = sorted(p for p in runs.glob("*") if p.is_dir() and (p / RUN_FILE).is_file()
                            and not (p / COMPLETE_FILE).exists())
        if not unfinished:
            raise UserError(f"--resume found no unfinished run under {runs}; start without --resume.")
        run_dir = unfinished[-1]
        previous = json.loads((run_dir / RUN_FILE).read_text())
        if previous != arguments:
            changed = sorted(k for k in arguments.keys() | previous.keys() if arguments.get(k) != previous.get(k))
            raise UserError(f"--resume: {', '.join(changed)} differ from the interrupted run in {run_dir}; "
                            "rerun with the same arguments, or without --resume.")
        return run_dir
    stamp = datetime.now(timezone.utc).strftime(RUN_STAMP)
    run_dir = runs / stamp
    run_dir.mkdir(parents=True)
    write_atomic(run_dir / RUN_FILE, json.dumps(arguments, indent=2, sort_keys=True))
    return run_dir


def run_started(workdir: str | os.PathLike) -> datetime | None:
    """When the run working in `workdir` first started, from its run directory's name; None where
    `workdir` is not a run directory (a notebook run by hand). A resumed run keeps its first start."""
    try:
        return datetime.strptime(Path(workdir).resolve().name, RUN_STAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def publish(run_dir: Path, out: Path, parts: list[str]) -> list[Path]:
    """Move each of `parts` (paths relative to the run directory) to the same place under `out`.

    A directory replaces the published directory as a whole (two renames), so figures
    of an earlier run never mix with this one's. Marks the run complete.
    """
    published = []
    for part in parts:
        source, target = Path(run_dir) / part, Path(out) / part
        if not source.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and target.exists():
            retired = Path(run_dir) / f".previous-{part.replace('/', '-')}"
            os.replace(target, retired)
            os.replace(source, target)
            shutil.rmtree(retired)
        else:
            os.replace(source, target)
        published.append(target)
    (Path(run_dir) / COMPLETE_FILE).touch()
    return published
