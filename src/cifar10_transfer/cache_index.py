"""The feature cache's integrity: each tensor file's chunks of rows, each with the sha256 of its bytes.

Beside each tensor file `<name>.npy` of a cache entry, `<name>.chunks.json` lists the chunks
that fills wrote: the dataset rows of each chunk and the sha256 of those rows' bytes, in
ascending row order. The rows a file holds are the union of its chunks; the index is
replaced atomically after a chunk's rows are written, so a killed fill leaves at worst rows
that no chunk claims. Rows are written without fsync (see `TensorStore.write`), so a
chunk's bytes are checked against its digest before they are used, once per chunk and
process (the caller keeps the `verified` set).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from .errors import UserError
from .publish import atomic_write, write_atomic

FORMAT = 1
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class Damaged(UserError):
    """A tensor file or its index that cannot be trusted; `reason` says why, in a few words."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"feature cache file {path} is damaged ({reason}); rerun to recompute it.")


@dataclass(frozen=True)
class Layout:
    """Rows of one tensor: how many (the split's images), each row's shape and the values' dtype name."""

    rows: int
    row_shape: tuple[int, ...]
    dtype: str

    @property
    def values(self) -> np.dtype:
        return np.dtype(ml_dtypes.bfloat16) if self.dtype == "bfloat16" else np.dtype(self.dtype)

    @property
    def stored(self) -> np.dtype:
        """The dtype in the .npy header: bfloat16 as 2-byte records, as NumPy's format has no such type."""
        return np.dtype("V2") if self.dtype == "bfloat16" else self.values

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.values.itemsize


@contextlib.contextmanager
def disk_errors(path: Path, needed: int | None = None):
    """Turn a failed write at `path` into a one-line `UserError`; `needed` bytes are named when the disk is full."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            size = f" (needs about {math.ceil(needed / 1e6):,} MB)" if needed else ""
            raise UserError(f"no space left on device for {path}{size}; free space or choose another --out.") from exc
        raise UserError(f"cannot write the feature cache at {path} ({exc.strerror or exc}); make it writable "
                        "or choose another --out.") from exc


def _runs(rows: np.ndarray):
    """(position in `rows`, first row, count) of each run of consecutive rows in ascending `rows`."""
    starts = np.flatnonzero(np.diff(rows) != 1) + 1
    for begin, end in zip(np.r_[0, starts], np.r_[starts, len(rows)]):
        yield int(begin), int(rows[begin]), int(end - begin)


class TensorStore:
    """One tensor's rows file and its index of digested chunks (see the module doc).

    `owner[row]` is the position in `chunks` of the chunk holding the row, -1 where no chunk
    does; `ready` says whether the file exists in this layout (a new or damaged one needs
    `create` before rows are written).
    """

    def __init__(self, path: Path, layout: Layout):
        self.path, self.layout = Path(path), layout
        self.index_path = self.path.with_name(f"{self.path.stem}.chunks.json")
        self.chunks: list[tuple[np.ndarray, str]] = []
        self.owner = np.full(layout.rows, -1, dtype=np.int64)
        self.ready = False

    @property
    def done(self) -> np.ndarray:
        return self.owner >= 0

    @classmethod
    def load(cls, path: Path, expected: Layout | None = None) -> TensorStore:
        """The store as its index records it (in `expected`'s layout, where given); `Damaged` if the
        index is missing or not a well-formed index of disjoint chunks of that layout."""
        path = Path(path)
        index_path = path.with_name(f"{path.stem}.chunks.json")
        try:
            index = json.loads(index_path.read_text())
        except FileNotFoundError:
            legacy = path.with_name(f"{path.stem}.done.npy").exists()
            raise Damaged(path, "no digests: cached by an older version" if legacy else "index missing") from None
        except (OSError, ValueError) as exc:
            raise Damaged(path, "unreadable index") from exc
        layout = _layout(path, index)
        if expected is not None and layout != expected:
            raise Damaged(path, "index of another tensor layout")
        store = cls(path, layout)
        for chunk in index["chunks"]:
            rows, digest = _chunk(path, chunk, layout.rows)
            if (store.owner[rows] >= 0).any():
                raise Damaged(path, "index lists a row twice")
            store._add(rows, digest)
        return store

    def _add(self, rows: np.ndarray, digest: str) -> None:
        self.owner[rows] = len(self.chunks)
        self.chunks.append((rows, digest))

    def check(self) -> int:
        """Where the rows start in the file, once its header and size match the layout; `Damaged` if not."""
        shape = (self.layout.rows, *self.layout.row_shape)
        try:
            with open(self.path, "rb") as file:
                header = (_HEADER_READERS[np.lib.format.read_magic(file)](file), file.tell(),
                          os.fstat(file.fileno()).st_size)
        except FileNotFoundError:
            raise Damaged(self.path, "file missing") from None
        except (OSError, ValueError, KeyError) as exc:
            raise Damaged(self.path, "unreadable header") from exc
        (stored_shape, fortran, dtype), offset, size = header
        if stored_shape != shape or fortran or dtype != self.layout.stored:
            raise Damaged(self.path, f"header says {dtype} {stored_shape}, index {self.layout.dtype} {shape}")
        if size != offset + self.layout.rows * self.layout.row_bytes:
            raise Damaged(self.path, f"{size:,} bytes, expected {offset + self.layout.rows * self.layout.row_bytes:,}")
        self.ready = True
        return offset

    def open(self) -> np.ndarray:
        """The rows, memory-mapped read-only in their values' dtype, after `check`."""
        return np.memmap(self.path, self.layout.values, "r", self.check(), (self.layout.rows, *self.layout.row_shape))

    def bad_chunks(self, rows: np.ndarray, verified: set) -> list[int]:
        """Positions of the chunks holding any of `rows` whose bytes no longer match their digest.

        A chunk that matched is added to `verified` and not read again while it is there.
        """
        numbers = np.unique(self.owner[np.asarray(rows)])
        raw, bad = None, []
        for number in numbers[numbers >= 0]:
            chunk_rows, digest = self.chunks[number]
            key = (str(self.path), int(chunk_rows[0]), digest)
            if key in verified:
                continue
            if raw is None:
                raw = np.memmap(self.path, np.uint8, "r", self.check(), (self.layout.rows, self.layout.row_bytes))
            sha = hashlib.sha256()
            for _, first, count in _runs(chunk_rows):
                sha.update(raw[first:first + count])
            if sha.hexdigest() == digest:
                verified.add(key)
            else:
                bad.append(int(number))
        return bad

    def drop(self, numbers: list[int]) -> np.ndarray:
        """Forget the chunks at `numbers` (their rows count as not computed); returns their rows."""
        lost = np.sort(np.concatenate([self.chunks[number][0] for number in numbers]))
        dropped = set(numbers)
        kept = [chunk for number, chunk in enumerate(self.chunks) if number not in dropped]
        self.chunks, self.owner[:] = [], -1
        for rows, digest in kept:
            self._add(rows, digest)
        return lost

    def create(self, needed: int) -> None:
        """A new file of unwritten rows and an index without chunks, replacing any damaged ones."""
        def make(temporary: str) -> None:
            shape = (self.layout.rows, *self.layout.row_shape)
            np.lib.format.open_memmap(temporary, mode="w+", dtype=self.layout.stored, shape=shape).flush()

        self.chunks, self.owner[:] = [], -1
        with disk_errors(self.index_path, needed):
            self.save()  # first: a run killed in between leaves no old chunk over the new file, to fail its digest
        with disk_errors(self.path, needed):
            atomic_write(self.path, make)
            self.path.with_name(f"{self.path.stem}.done.npy").unlink(missing_ok=True)  # an older version's
        self.ready = True

    def write(self, rows: np.ndarray, values: np.ndarray, needed: int, verified: set) -> None:
        """Write `values` into `rows` (ascending), then record them as a chunk with their digest.

        Positioned writes, not a memory map: assigning rows of a memory-mapped sparse file
        faults in and zero-fills every page first, which made writing 400 images of
        ResNet50's cut tensors take about 1 s, against 0.05 s this way. No fsync: the rows
        are in the page cache, which survives a killed process, and waiting for the disk
        doubled the time of a pass; the digest catches rows that never reached it.
        """
        data = np.ascontiguousarray(np.asarray(values).astype(self.layout.values))
        if data.shape[1:] != self.layout.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {data.shape[1:]}, stored {self.layout.row_shape}")
        data = data.reshape(len(data), -1).view(np.uint8)  # bytes: bfloat16 has no buffer format
        with disk_errors(self.path, needed):
            offset = self.check()
            with open(self.path, "r+b") as file:
                for position, first, count in _runs(rows):
                    _write_all(file.fileno(), data[position:position + count], offset + first * self.layout.row_bytes)
        digest = hashlib.sha256(data).hexdigest()
        self._add(np.asarray(rows, dtype=np.int64), digest)
        verified.add((str(self.path), int(rows[0]), digest))
        with disk_errors(self.index_path, needed):
            self.save()

    def save(self) -> None:
        index = {"format": FORMAT, "rows": self.layout.rows, "row_shape": list(self.layout.row_shape),
                 "dtype": self.layout.dtype,
                 "chunks": [{"rows": rows.tolist(), "sha256": digest} for rows, digest in self.chunks]}
        write_atomic(self.index_path, json.dumps(index, separators=(",", ":")))


def _write_all(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:  # pwrite may write less than asked
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _is_int(value) -> bool:
    return type(value) is int  # not bool, which JSON's true would give


def _layout(path: Path, index) -> Layout:
    """The layout an index records; `Damaged` if it is not one."""
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise Damaged(path, "index of an unknown format")
    rows, shape, dtype = index.get("rows"), index.get("row_shape"), index.get("dtype")
    if not (_is_int(rows) and 0 < rows < 2**31 and isinstance(shape, list) and all(_is_int(n) and n > 0 for n in shape)
            and isinstance(dtype, str) and isinstance(index.get("chunks"), list)):
        raise Damaged(path, "index without a valid layout")
    layout = Layout(rows, tuple(shape), dtype)
    try:
        layout.values.itemsize  # a dtype NumPy does not know raises TypeError
    except TypeError as exc:
        raise Damaged(path, f"index names an unknown dtype {dtype!r}") from exc
    return layout


def _chunk(path: Path, chunk, n_rows: int) -> tuple[np.ndarray, str]:
    """The rows and digest of one chunk of an index; `Damaged` if they are not ascending rows of the file."""
    rows, digest = (chunk.get("rows"), chunk.get("sha256")) if isinstance(chunk, dict) else (None, None)
    if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
            and isinstance(rows, list) and rows and all(_is_int(row) for row in rows)):
        raise Damaged(path, "index with a malformed chunk")
    if not 0 <= rows[0] <= rows[-1] < n_rows or any(b <= a for a, b in zip(rows, rows[1:])):
        raise Damaged(path, "index lists rows out of range or out of order")
    return np.asarray(rows, dtype=np.int64), digest
