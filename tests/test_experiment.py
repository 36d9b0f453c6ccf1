"""The experiment's stages on tiny inputs: cached flips, end-to-end head, fine-tuning, reuse of finished stages."""

import numpy as np
import pytest

from cifar10_transfer.config import make_config
from cifar10_transfer.data import synthetic_dataset
from cifar10_transfer.experiment import Experiment

TINY = ["image_size=32", "train_size=100", "test_size=50", "batch_size=25", "head_epochs=1", "finetune_epochs=1",
        "models=resnet50_finetuned"]


def _experiment(tmp_path, *overrides):
    config = make_config("smoke", [*TINY, *overrides])
    return Experiment(config, synthetic_dataset(seed=3), "none", tmp_path, "smoke")


@pytest.mark.slow
def test_cached_flips_double_the_head_examples_and_fine_tuning_unfreezes(tmp_path):
    experiment = _experiment(tmp_path, "cache_flips=true")
    results = experiment.run_all()
    head, finetuned = results["models"]["resnet50_head"], results["models"]["resnet50_finetuned"]
    features = np.load(tmp_path / "stages" / "resnet50_head" / "features" / "train_flipped.npy")
    assert features.shape == (80, 2048)
    assert not np.allclose(features, np.load(tmp_path / "stages" / "resnet50_head" / "features" / "train.npy"))
    assert head["trainable_params"] == 527_114 and finetuned["trainable_params"] > head["trainable_params"]
    assert head["precision"] == finetuned["precision"]
    assert sum(map(sum, finetuned["confusion_matrix"])) == 50


@pytest.mark.slow
def test_end_to_end_head_and_finished_stages_are_reused(tmp_path):
    first = _experiment(tmp_path, "head_mode=end_to_end", "models=resnet50_head").run_all()
    again = _experiment(tmp_path, "head_mode=end_to_end", "models=resnet50_head").run_all()
    assert again["models"]["resnet50_head"]["seconds"] == first["models"]["resnet50_head"]["seconds"]
    assert again["models"]["resnet50_head"]["test_accuracy"] == first["models"]["resnet50_head"]["test_accuracy"]
    assert first["not_run"] == {"cnn": "not selected", "resnet50_finetuned": "not selected"}
