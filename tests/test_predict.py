"""`predict`: images of any size and mode, classified by a saved stage exactly as test images were."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar10_transfer.cli import main
from cifar10_transfer.data import synthetic_dataset
from cifar10_transfer.errors import UserError
from cifar10_transfer.predict import format_table, image_files, load_stage, predict_images
from cifar10_transfer.publish import file_sha256
from cifar10_transfer.workflow import train

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = list(synthetic_dataset(seed=3).class_names)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A published CNN run on synthetic data (seconds), shared by the tests here."""
    out = tmp_path_factory.mktemp("predict-run")
    train("smoke", ["models=cnn", "train_size=500", "test_size=100"], "synthetic", None, "none", out)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The first synthetic test images, written in several formats, modes and sizes."""
    folder = tmp_path_factory.mktemp("images")
    pixels = synthetic_dataset(seed=3).x_test[:4]
    Image.fromarray(pixels[0]).save(folder / "a.png")
    Image.fromarray(pixels[1]).save(folder / "b.jpg", quality=95)
    Image.fromarray(pixels[2]).convert("RGBA").resize((64, 48)).save(folder / "c_rgba.png")
    Image.fromarray(pixels[3]).convert("L").save(folder / "d_gray.png")
    return folder


def test_a_saved_stage_classifies_an_image_as_the_trained_model_did(run, images):
    model, card = load_stage(run, "cnn")
    assert card == {"stage": "cnn", "class_names": list(synthetic_dataset(seed=3).class_names), "image_size": None,
                    "backbone": None, "test_time_flip": False, "sha256": file_sha256(run / "models" / "cnn.keras")}
    stage, predictions = predict_images(run, [images / "a.png"])
    assert stage == "cnn"  # the best (only) model of the run
    expected = model.predict(synthetic_dataset(seed=3).x_test[:1] / 255.0, verbose=0)[0]
    names, probabilities = zip(*predictions[0].top)
    assert list(names) == [card["class_names"][i] for i in np.argsort(expected)[::-1][:3]]
    np.testing.assert_allclose(probabilities, np.sort(expected)[::-1][:3], rtol=1e-5)


def test_a_run_evaluated_with_test_time_flip_predicts_with_the_mirror_too(run, images, tmp_path):
    flipped_run = tmp_path / "flipped"
    shutil.copytree(run, flipped_run)
    card_path = flipped_run / "models" / "cnn.json"
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), "test_time_flip": True}))
    model, _ = load_stage(run, "cnn")
    pixels = synthetic_dataset(seed=3).x_test[:1] / 255.0
    plain, mirrored = model.predict(pixels, verbose=0)[0], model.predict(pixels[:, :, ::-1], verbose=0)[0]
    assert not np.allclose(plain, mirrored, atol=1e-4)  # else a single view would pass too
    _, predictions = predict_images(flipped_run, [images / "a.png"])
    names, probabilities = zip(*predictions[0].top)
    expected = (plain + mirrored) / 2
    assert list(names) == [CLASS_NAMES[i] for i in np.argsort(expected)[::-1][:3]]
    np.testing.assert_allclose(probabilities, np.sort(expected)[::-1][:3], rtol=1e-5)


def test_any_size_and_mode_and_folders_are_classified_in_order(run, images):
    assert [p.name for p in image_files([images])] == ["a.png", "b.jpg", "c_rgba.png", "d_gray.png"]
    _, predictions = predict_images(run, [images / "d_gray.png", images])
    assert [Path(p.image).name for p in predictions] == ["d_gray.png", "a.png", "b.jpg", "c_rgba.png", "d_gray.png"]
    for p in predictions:
        assert p.error is None and len(p.top) == 3
        probabilities = [v for _, v in p.top]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6


def test_one_bad_file_is_reported_and_the_others_still_classified(run, images, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    _, predictions = predict_images(run, [images / "a.png", bad, tmp_path / "missing.jpg"])
    assert predictions[0].error is None and len(predictions[0].top) == 3
    assert "notes.png is not a readable image" in predictions[1].error
    assert "missing.jpg is not a readable image" in predictions[2].error
    table = format_table("cnn", predictions).splitlines()
    assert table[0] == "model: cnn" and "error:" in table[3]


def test_bad_runs_models_and_folders_are_refused_with_a_fix(run, images, tmp_path):
    with pytest.raises(UserError, match="holds no run"):
        predict_images(tmp_path / "nothing", [images])
    with pytest.raises(UserError, match=r"no saved model 'resnet50_head' \(saved: cnn\)"):
        predict_images(run, [images], "resnet50_head")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        predict_images(run, [tmp_path / "empty"])


def test_cli_prints_json_and_exits_2_when_a_file_is_bad(run, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    result = subprocess.run([sys.executable, "-m", "cifar10_transfer", "predict", "--run", str(run), "--json",
                             str(images / "a.png"), str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    output = json.loads(result.stdout)
    assert output["model"] == "cnn" and len(output["images"][0]["top"]) == 3
    assert "error" in output["images"][1]
    assert result.stderr.strip().splitlines() == [f"error: {output['images'][1]['error']}"]


def _damage(kind: str, path: Path) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "bytes changed":
        path.write_bytes(data[:-64] + bytes(b ^ 0xFF for b in data[-64:]))
    else:  # foreign: another file under the model's name
        path.write_bytes(b"PK\x03\x04 not a keras archive")


@pytest.mark.parametrize("kind", [pytest.param("truncated", marks=pytest.mark.slow), pytest.param(
    "empty", marks=pytest.mark.slow), "bytes changed", pytest.param("foreign", marks=pytest.mark.slow)])
def test_a_damaged_model_file_or_card_is_refused_in_one_line_naming_it(run, images, tmp_path, capsys, kind):
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    _damage(kind, damaged / "models" / "cnn.keras")
    with pytest.raises(UserError, match=r"models/cnn\.keras (is damaged|does not load)"):
        predict_images(damaged, [images / "a.png"])
    card = damaged / "models" / "cnn.json"
    card.write_text(card.read_text()[:20] if kind != "foreign" else '{"some": "other json"}')
    with pytest.raises(UserError, match=r"models/cnn\.json (is damaged|is not a model card)"):
        predict_images(damaged, [images / "a.png"])
    capsys.readouterr()
    assert main(["predict", "--run", str(damaged), str(images / "a.png")]) == 2  # the CLI, in this process
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cnn.json" in lines[0]
