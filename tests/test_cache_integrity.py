"""The feature cache's integrity: damaged rows are found, named in one line and recomputed exactly."""

import errno
import json
import os
import shutil

import keras
import numpy as np
import pytest

from cifar10_transfer import cache as cache_module
from cifar10_transfer import cache_index
from cifar10_transfer.cache import CachedRows, FeatureCache
from cifar10_transfer.cache_index import Damaged
from cifar10_transfer.data import Dataset
from cifar10_transfer.errors import UserError
from cifar10_transfer.models import build_transfer

ROWS = np.arange(40)
CHUNK = 8  # five chunks of two batches of 4: a repaired chunk is computed in the batches of the clean run
TRACED: dict = {}  # extractors shared by the module's caches: each new cache would trace its predict again (~3 s)


def _cache(root) -> FeatureCache:
    cache = FeatureCache(root)
    cache._extractors = TRACED
    return cache


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    return Dataset(images[:40], np.arange(40) % 10, images[40:], np.arange(10), tuple("abcdefghij"), "test images")


@pytest.fixture(scope="module")
def transfer():
    keras.utils.set_random_seed(0)
    return build_transfer("efficientnet_lite0", 32, "none")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, dataset, transfer):
    """A filled cache folder and its features, computed once for every test of the module."""
    root = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache_module, "CHUNK", CHUNK)
        features = _cache(root).pooled(transfer, dataset, "train", ROWS, 32, 4)
    return root, features


@pytest.fixture
def copy(tmp_path, clean, dataset, transfer, monkeypatch):
    """A copy of the clean cache, and the path of its pooled features."""
    monkeypatch.setattr(cache_module, "CHUNK", CHUNK)
    root = shutil.copytree(clean[0], tmp_path / "cache")
    return root, root / FeatureCache(root).key(transfer, dataset, "train", 32) / "pooled.npy"


def _rerun(root, dataset, transfer, capsys, path, rows: int, reason: str):
    """Run the cache again (as a later process would) and check it recomputed `rows` rows, saying so once."""
    cache = _cache(root)
    features = cache.pooled(transfer, dataset, "train", ROWS, 32, 4)
    lines = [line for line in capsys.readouterr().out.splitlines() if str(path) in line]
    assert lines == [f"cache: recomputing {rows} rows of {path} ({reason})"]
    assert cache.computed == rows
    return features


def _flip(path, rows):
    """Flip every byte of `rows` of a float32 .npy file in place, as a bad disk or a stray write would."""
    array = np.load(path, mmap_mode="r")
    offset, row_bytes = array.offset, array.strides[0]
    del array
    with open(path, "r+b") as file:
        file.seek(offset + rows[0] * row_bytes)
        data = bytearray(file.read(len(rows) * row_bytes))
        file.seek(offset + rows[0] * row_bytes)
        file.write(bytes(255 - b for b in data))


def _truncate(path):
    size = path.stat().st_size
    os.truncate(path, size - 1000)  # the disk filled up, or a copy was cut short
    return f"{size - 1000:,} bytes, expected {size:,}"


def _grow(path):
    size = path.stat().st_size
    os.truncate(path, size + 4096)
    return f"{size + 4096:,} bytes, expected {size:,}"


def _replace(path):
    np.save(path, np.zeros((40, 640), dtype=np.float32))  # another array under the same name
    return "header says float32 (40, 640), index float32 (40, 1280)"


@pytest.mark.parametrize("damage", [_truncate, _grow, _replace])
def test_a_damaged_file_is_recreated(damage, copy, clean, dataset, transfer, capsys):
    root, path = copy
    reason = damage(path)
    features = _rerun(root, dataset, transfer, capsys, path, 40, reason)
    np.testing.assert_array_equal(features, clean[1])


def test_rows_changed_on_disk_are_refused_then_only_their_chunk_is_recomputed(copy, clean, dataset, transfer,
                                                                              capsys):
    root, path = copy
    _flip(path, [10, 11])
    with pytest.raises(Damaged, match="digest mismatch") as refused:  # never served as features
        FeatureCache(root).read(path.parent, "pooled", ROWS)
    assert str(path) in str(refused.value)
    with pytest.raises(Damaged, match="digest mismatch"):  # nor read by stage 2
        CachedRows([path.parent], ["pooled"], ROWS, ROWS % 10, 4).dataset({"pooled": clean[1].shape[1:]})
    features = _rerun(root, dataset, transfer, capsys, path, CHUNK, "digest mismatch")  # the chunk of rows 8-15
    np.testing.assert_array_equal(features, clean[1])
    reread = FeatureCache(root)
    np.testing.assert_array_equal(reread.read(path.parent, "pooled", ROWS), clean[1])  # repaired for good


GOOD = {"format": 1, "rows": 40, "row_shape": [1280], "dtype": "float32"}
GARBAGE = {  # index text -> what the line says
    "garbage": ("\x00\x13 not json", "unreadable index"),
    "a row out of range": (json.dumps({**GOOD, "chunks": [{"rows": [39, 40], "sha256": "0" * 64}]}),
                           "index lists rows out of range or out of order"),
    "rows of the wrong type": (json.dumps({**GOOD, "chunks": [{"rows": ["0", True], "sha256": "0" * 64}]}),
                               "index with a malformed chunk"),
    "a row in two chunks": (json.dumps({**GOOD, "chunks": [{"rows": [1, 2], "sha256": "0" * 64},
                                                           {"rows": [2], "sha256": "1" * 64}]}),
                            "index lists a row twice"),
    "another layout": (json.dumps({**GOOD, "row_shape": [640], "chunks": []}), "index of another tensor layout"),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_a_garbage_index_recomputes_its_file(kind, copy, clean, dataset, transfer, capsys):
    root, path = copy
    text, reason = GARBAGE[kind]
    path.with_name("pooled.chunks.json").write_text(text)
    features = _rerun(root, dataset, transfer, capsys, path, 40, reason)
    np.testing.assert_array_equal(features, clean[1])


@pytest.mark.parametrize("older_version", [False, True])
def test_a_file_without_index_is_recomputed(older_version, copy, clean, dataset, transfer, capsys):
    root, path = copy
    path.with_name("pooled.chunks.json").unlink()
    if older_version:  # its bare done-mask says nothing about the bytes
        np.save(path.with_name("pooled.done.npy"), np.ones(40, dtype=bool))
    reason = "no digests: cached by an older version" if older_version else "index missing"
    features = _rerun(root, dataset, transfer, capsys, path, 40, reason)
    np.testing.assert_array_equal(features, clean[1])
    assert not path.with_name("pooled.done.npy").exists()


def _disk_full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failing", ["row writes", "index", "file creation"])
def test_no_space_left_is_one_line_with_the_space_needed(failing, copy, clean, dataset, transfer, capsys, monkeypatch):
    root, path = copy
    if failing == "row writes":
        _flip(path, [0])
        monkeypatch.setattr(os, "pwrite", _disk_full)
        full, rows, reason = path, CHUNK, "digest mismatch"  # 8 rows of 1,280 float32: 41 kB
    else:  # the file is recreated: its index is written first, then the file
        reason, rows = _truncate(path), 40
        full = path.with_name("pooled.chunks.json") if failing == "index" else path
        monkeypatch.setattr(cache_index, "write_atomic" if failing == "index" else "atomic_write", _disk_full)
    with pytest.raises(UserError) as refused:
        _cache(root).pooled(transfer, dataset, "train", ROWS, 32, 4)
    assert str(refused.value) == (f"no space left on device for {full} (needs about 1 MB); "
                                  "free space or choose another --out.")
    monkeypatch.undo()
    monkeypatch.setattr(cache_module, "CHUNK", CHUNK)
    capsys.readouterr()
    features = _rerun(root, dataset, transfer, capsys, path, rows, reason)  # still damaged, so repaired now
    np.testing.assert_array_equal(features, clean[1])


def test_a_cache_that_cannot_be_written_is_refused_in_one_line(copy, tmp_path, dataset, transfer, monkeypatch):
    root, path = copy
    _flip(path, [20])
    # a read-only folder; tests run as root, where chmod does not stop writes, so the write fails by hand
    os.chmod(path.parent, 0o555)

    def read_only(*args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "pwrite", read_only)
    try:
        with pytest.raises(UserError, match=r"cannot write the feature cache at .*\(Permission denied\); make it "
                                            r"writable or choose another --out\.$") as refused:
            _cache(root).pooled(transfer, dataset, "train", ROWS, 32, 4)
    finally:
        os.chmod(path.parent, 0o755)
    assert str(path) in str(refused.value)
    (tmp_path / "file").write_text("")  # a file where the cache folder should be
    with pytest.raises(UserError, match="cannot write the feature cache at .*file/.*Not a directory"):
        _cache(tmp_path / "file").pooled(transfer, dataset, "train", ROWS, 32, 4)


def test_a_garbage_speed_record_starts_again_and_the_features_are_still_served(copy, clean, dataset, transfer):
    root, path = copy
    (path.parent / "speed.json").write_text("{not json")
    cache = _cache(root)
    assert cache.speed(transfer, dataset, "train", 32) is None  # only a timing: never a traceback
    np.testing.assert_array_equal(cache.pooled(transfer, dataset, "train", ROWS, 32, 4), clean[1])
    assert cache.computed == 0
