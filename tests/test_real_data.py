"""End to end on the real CIFAR-10 copy (CIFAR10_DIR; CI extracts ../shared/data/cifar10-jpeg.tar.gz)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pypdf
import pytest
from PIL import Image

from cifar10_transfer.data import load_dataset
from cifar10_transfer.plots import format_accuracy

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ["train_label_distribution.png", "dataset_samples.png", "avg_rgb_by_class.png", "pixel_intensity.png",
           "augmentation.png", "cnn_curve.png", "resnet_head.png", "resnet_finetuning.png", "confusion_matrix.png",
           "common_errors.png", "misclassified_examples.png", "per_class_metrics.png", "model_comparison.png"]


@pytest.mark.real_data
def test_all_60000_real_images_load(real_data_dir):
    dataset = load_dataset(data_dir=real_data_dir)
    assert dataset.x_train.shape == (50_000, 32, 32, 3) and dataset.x_test.shape == (10_000, 32, 32, 3)
    assert np.bincount(dataset.y_train).tolist() == [5000] * 10
    assert np.bincount(dataset.y_test).tolist() == [1000] * 10
    assert dataset.class_names == ("airplane", "automobile", "bird", "cat", "deer",
                                   "dog", "frog", "horse", "ship", "truck")
    assert "JPEG copy" in dataset.description
    assert 100 < dataset.x_train.mean() < 150  # real photographs, not blank decodes


@pytest.mark.real_data
@pytest.mark.slow
def test_smoke_reproduce_on_real_data(real_data_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "cifar10_transfer", "reproduce", "--profile", "smoke",
                             "--data-dir", str(real_data_dir), "--weights", "none", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    for figure in FIGURES:
        assert (tmp_path / "images" / figure).stat().st_size > 10_000, figure
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert set(results["models"]) == {"cnn", "resnet50_head", "resnet50_finetuned"}
    assert "JPEG copy" in results["provenance"]["data"] and results["provenance"]["weights"] == "none"
    for name in ("01_gathering_eda.ipynb", "02_preprocessing_modeling_evaluation.ipynb"):
        executed = json.loads((tmp_path / "results" / "notebooks" / name).read_text())
        assert any(cell.get("outputs") for cell in executed["cells"])
    reader = pypdf.PdfReader(tmp_path / "presentation" / "computer_vision_image_classification.pdf")
    assert len(reader.pages) >= 12
    text = "\n".join(page.extract_text() for page in reader.pages)
    for entry in results["models"].values():
        assert format_accuracy(entry["test_accuracy"]) in text
    assert "not transfer learning" in text
    assert not list(tmp_path.glob(".runs/*/results"))  # everything was published out of the run directory


IMAGENET_DOGS = range(151, 269)  # ImageNet classes 151-268 are dog breeds


@pytest.mark.real_data
def test_converted_efficientnet_lite0_sees_imagenet_dogs_in_cifar_dogs(real_data_dir):
    """A wrong layer mapping or transposition cannot pass: the ImageNet top must still work."""
    import tensorflow as tf

    from cifar10_transfer import efficientnet_lite as lite
    from cifar10_transfer.backbones import keras_models_dir

    dogs = sorted((real_data_dir / "test" / "dog").iterdir())[:200]
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in dogs]).astype(np.float32)
    inputs = lite.preprocess(tf.image.resize(images, (224, 224)))
    shares = {}
    for name, pretrained in (("imagenet", True), ("random", False)):
        model = lite.build(224, include_top=True)
        if pretrained:
            model.load_weights(lite.converted_weights(lite.checkpoint_path(), keras_models_dir()))
        top = model.predict(inputs, batch_size=50, verbose=0).argmax(axis=1)
        shares[name] = float(np.isin(top, IMAGENET_DOGS).mean())
    assert shares["imagenet"] >= 0.5, shares
    assert shares["random"] < 0.3, shares
