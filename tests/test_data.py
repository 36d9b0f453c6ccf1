import io
import os
import pickle
import tarfile
import warnings

import numpy as np
import pytest
from PIL import Image

import cifar10_transfer.data as data_module
from cifar10_transfer.data import load_dataset, safe_extract, synthetic_dataset
from cifar10_transfer.errors import UserError
from conftest import CLASSES, PER_BATCH, fake_batch, write_batch, write_image_folders, write_official_tarball


def _expected_train():
    parts = [fake_batch(i) for i in range(1, 6)]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def _check_official(dataset):
    x_train, y_train = _expected_train()
    x_test, y_test = fake_batch(6)
    assert dataset.x_train.shape == (5 * PER_BATCH, 32, 32, 3) and dataset.x_train.dtype == np.uint8
    np.testing.assert_array_equal(dataset.x_train, x_train)  # batch order: data_batch_1 first
    np.testing.assert_array_equal(dataset.y_train, y_train)
    np.testing.assert_array_equal(dataset.x_test, x_test)
    np.testing.assert_array_equal(dataset.y_test, y_test)
    assert dataset.y_train.ndim == 1 and dataset.class_names == CLASSES


def test_official_batches_directory(official_dir):
    dataset = load_dataset(data_dir=official_dir)
    _check_official(dataset)
    assert "official batches" in dataset.description


def test_parent_of_batches_directory(official_dir):
    _check_official(load_dataset(data_dir=official_dir.parent))


def test_official_tarball(tmp_path):
    folder = tmp_path / "download"
    folder.mkdir()
    write_official_tarball(folder / "cifar-10-python.tar.gz")
    (tmp_path / "download" / "staging").rename(tmp_path / "elsewhere")
    dataset = load_dataset(data_dir=folder)
    _check_official(dataset)
    assert "official tarball" in dataset.description


def test_environment_variable_is_used(official_dir, monkeypatch):
    monkeypatch.setenv("CIFAR10_DIR", str(official_dir))
    _check_official(load_dataset())


def test_image_folders_single_top_level_subfolder(tmp_path):
    write_image_folders(tmp_path / "outer" / "cifar10-images", suffix=".jpg")
    dataset = load_dataset(data_dir=tmp_path / "outer")
    assert dataset.x_train.shape == (30, 32, 32, 3) and dataset.x_test.shape == (30, 32, 32, 3)
    assert dataset.class_names == CLASSES
    np.testing.assert_array_equal(dataset.y_train, np.repeat(np.arange(10), 3))
    assert dataset.description == "CIFAR-10 (JPEG copy, image folders, outer/)"


def test_image_folder_values_and_conversions(image_root):
    Image.new("L", (32, 32), 77).save(image_root / "train" / "cat" / "gray.png")
    Image.new("RGBA", (32, 32), (10, 20, 30, 128)).save(image_root / "train" / "cat" / "rgba.png")
    Image.new("RGB", (64, 48), (200, 100, 50)).save(image_root / "train" / "dog" / "big.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_dataset(data_dir=image_root)
    assert [str(w.message) for w in caught if "resized" in str(w.message)] == [
        "1 images were not 32x32 and were resized to 32x32."]
    cats = dataset.x_train[dataset.y_train == CLASSES.index("cat")]
    assert cats.shape == (5, 32, 32, 3)
    assert (cats[:, 0, 0] == [77, 77, 77]).all(axis=1).any()  # grayscale became RGB
    assert (cats[:, 0, 0] == [10, 20, 30]).all(axis=1).any()  # RGBA lost its alpha
    assert dataset.x_train[0, 0, 0, 0] == 0 and dataset.x_train[3, 0, 0, 0] == 20  # airplane 0, automobile 20


def test_decoded_image_folders_are_kept_and_redone_when_a_file_changes(image_root, monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR10_TRANSFER_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (64, 48), (200, 100, 50)).save(image_root / "train" / "dog" / "big.png")
    first = load_dataset(data_dir=image_root)
    assert len(list((tmp_path / "cache" / "image-folders").glob("*.npz"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data_module, "read_image", no_decoding)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_dataset(data_dir=image_root)
    np.testing.assert_array_equal(again.x_train, first.x_train)
    np.testing.assert_array_equal(again.y_test, first.y_test)
    assert again.description == first.description and again.fingerprint() == first.fingerprint()
    assert any("1 images were not 32x32" in str(w.message) for w in caught)  # said again, from the cache
    monkeypatch.undo()
    monkeypatch.setenv("CIFAR10_TRANSFER_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (32, 32), (1, 2, 3)).save(image_root / "train" / "cat" / "0000.png")  # same name, new pixels
    changed = load_dataset(data_dir=image_root)
    assert (changed.x_train[changed.y_train == CLASSES.index("cat")][0, 0, 0] == [1, 2, 3]).all()


def test_synthetic_is_deterministic_and_labelled():
    a, b, c = synthetic_dataset(seed=1), synthetic_dataset(seed=1), synthetic_dataset(seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.description.startswith("synthetic") and a.is_synthetic
    assert np.bincount(a.y_train).tolist() == [1200] * 10 and a.x_train.dtype == np.uint8


def test_keras_download_failure_names_the_three_ways(monkeypatch):
    import keras

    def offline():
        raise OSError("no network")

    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(UserError) as error:
        load_dataset()
    message = str(error.value)
    assert "--data-dir" in message and "CIFAR10_DIR" in message and "--data synthetic" in message


# --- broken input: one clear UserError each -------------------------------------------------

def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(data_dir=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is empty"):
        load_dataset(data_dir=tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hi")
    (tmp_path / "other" / "more.txt").write_text("hi")
    with pytest.raises(UserError, match="none of the known layouts"):
        load_dataset(data_dir=tmp_path / "other")


def test_truncated_tarball(tmp_path):
    folder = tmp_path / "download"
    folder.mkdir()
    tarball = write_official_tarball(folder / "cifar-10-python.tar.gz")
    tarball.write_bytes(tarball.read_bytes()[:2000])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset(data_dir=folder)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "data_batch_3").write_bytes(b"\x80\x02garbage"), "corrupt"),
    (lambda d: (d / "data_batch_2").write_bytes(pickle.dumps({b"pixels": 1}, protocol=2)), "lacks the 'data'"),
    (lambda d: write_batch(d / "data_batch_1", np.zeros((20, 16, 16, 3), np.uint8), [0] * 20), "expected N x 3072"),
    (lambda d: write_batch(d / "test_batch", fake_batch(6)[0], [12] * PER_BATCH), "labels outside"),
    (lambda d: (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b", b"c", b"d", b"e",
                                                 b"f", b"g", b"h", b"i", b"j", b"k"]}, protocol=2)),
     "names 11 classes but the labels use 10"),
    (lambda d: (d / "data_batch_5").unlink(), "lacks data_batch_5"),
])
def test_broken_batches(official_dir, damage, message):
    damage(official_dir)
    with pytest.raises(UserError, match=message):
        load_dataset(data_dir=official_dir)


def test_malicious_pickle_never_runs(official_dir, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (official_dir / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(UserError, match="refused"):
        load_dataset(data_dir=official_dir)
    assert not marker.exists()


def test_image_folder_problems(tmp_path):
    root = write_image_folders(tmp_path / "a")
    (root / "train" / "cat" / "notes.png").write_text("not an image")
    with pytest.raises(UserError, match="notes.png is not a readable image"):
        load_dataset(data_dir=root)
    root = write_image_folders(tmp_path / "b")
    (root / "test" / "truck").rename(root / "test" / "lorry")
    with pytest.raises(UserError, match="class folders differ"):
        load_dataset(data_dir=root)
    root = write_image_folders(tmp_path / "c")
    for image in (root / "train" / "bird").iterdir():
        image.unlink()
    with pytest.raises(UserError, match="bird is empty"):
        load_dataset(data_dir=root)


def _tar_with(path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)


@pytest.mark.parametrize("make_member", [
    lambda: (tarfile.TarInfo("../escape.txt"), b"x"),
    lambda: (tarfile.TarInfo("/tmp/absolute-escape.txt"), b"x"),
    lambda: (_link("inner", "/etc/passwd"), b""),
    lambda: (_device("dev"), b""),
])
def test_archive_extraction_refuses_escapes(tmp_path, make_member):
    member, data = make_member()
    member.size = len(data)
    archive = tmp_path / "evil.tar.gz"
    _tar_with(archive, member, data)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UserError, match="unsafe member"):
        safe_extract(archive, dest)
    assert not (tmp_path / "escape.txt").exists()


def _link(name, target):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = tarfile.SYMTYPE, target
    return member


def _device(name):
    member = tarfile.TarInfo(name)
    member.type = tarfile.CHRTYPE
    return member

