"""A run stopped at any point and resumed ends with exactly the numbers of a run never stopped."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cifar10_transfer import stages, training
from cifar10_transfer.config import make_config
from cifar10_transfer.data import synthetic_dataset
from cifar10_transfer.pipelines import epoch_variable
from cifar10_transfer.runs import run_all
from cifar10_transfer.stages import Run

# EfficientNet-Lite0 at 32 px: dropout in the head, stochastic depth, augmentation and shuffling in
# stage 2, and a frozen prefix (20 layers unfrozen), so every source of randomness is exercised.
TINY = {"image_size": 32, "train_size": 100, "test_size": 50, "batch_size": 25, "head_epochs": 2,
        "finetune_epochs": 2, "models": "efficientnet_lite0_finetuned", "finetune_layers": 20,
        "finetune_lr": 1e-3}


def _run(workdir, **overrides) -> Run:
    config = make_config("smoke", {**TINY, **overrides})
    return Run(config, synthetic_dataset(seed=3), "none", workdir, "smoke", save_models=False)


def _numbers(results: dict) -> dict:
    return {name: (m["test_accuracy"], m["history"]["loss"], m["history"]["val_loss"])
            for name, m in results["models"].items()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return _numbers(run_all(_run(tmp_path_factory.mktemp("straight"))))


FINETUNED = training.zlib.crc32(b"efficientnet_lite0_finetuned")  # how `_EpochSeeds` names the stage
write_atomic = training.write_atomic


def _raise(*args, **kwargs):
    raise KeyboardInterrupt


def _stop_as_stage_two_epoch_two_begins(self, epoch, logs=None):
    if self.stage == FINETUNED and epoch == 1:
        raise KeyboardInterrupt
    ORIGINAL_EPOCH_BEGIN(self, epoch, logs)


def _stop_mid_stage_two_epoch_two(self, batch, logs=None):
    if self.stage == FINETUNED and batch == 1 and int(epoch_variable().numpy()) == 1:
        raise KeyboardInterrupt


def _stop_before_the_stage_record(path, data):
    if str(path).endswith("efficientnet_lite0_finetuned/stage.json"):
        raise KeyboardInterrupt
    return write_atomic(path, data)


ORIGINAL_EPOCH_BEGIN = training._EpochSeeds.on_epoch_begin
STOPS = {"stage two starts": (stages, "unfreeze", _raise),
         "stage two's second epoch starts": (training._EpochSeeds, "on_epoch_begin",
                                             _stop_as_stage_two_epoch_two_begins),
         "mid-epoch": (training._EpochSeeds, "on_train_batch_end", _stop_mid_stage_two_epoch_two),
         "between the final weights and the stage record": (training, "write_atomic", _stop_before_the_stage_record)}


@pytest.mark.slow
@pytest.mark.parametrize("where", list(STOPS))
def test_a_stopped_run_resumes_to_the_numbers_of_one_never_stopped(straight, tmp_path, monkeypatch, where):
    with monkeypatch.context() as patch:
        patch.setattr(*STOPS[where])
        with pytest.raises(KeyboardInterrupt):
            run_all(_run(tmp_path))
    resumed = _numbers(run_all(_run(tmp_path)))  # a new record, as a new process would make
    assert resumed == straight


@pytest.mark.slow
def test_kill_9_after_stage_one_and_resume_gives_the_straight_run(straight, tmp_path):
    """A real SIGKILL of the command-line run, then `--resume`: the same numbers as in-process."""
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "cifar10_transfer", "train", "--data", "synthetic", "--profile", "smoke",
               "--weights", "none", "--out", str(tmp_path), *sets]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    head_done = lambda: any(tmp_path.glob(".runs/*/stages/efficientnet_lite0_head/stage.json"))  # noqa: E731
    deadline = time.monotonic() + 600
    while not head_done() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert head_done(), "the head stage never finished"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    subprocess.run([*command, "--resume"], check=True, capture_output=True)
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert _numbers(results) == straight


@pytest.mark.slow
def test_a_run_stopped_while_publishing_resumes_to_the_same_published_results(tmp_path, monkeypatch):
    from cifar10_transfer import publish, workflow

    args = ("smoke", ["models=cnn", "train_size=200", "test_size=100"], "synthetic", None, "none")
    straight = json.loads(workflow.train(*args, tmp_path / "straight").read_text())
    original, moves = os.replace, []

    def stop_after_the_first_part(source, target):
        if ".tmp-" not in str(source) and ".runs" in str(source):  # a part moving out of the run directory
            moves.append(target)
            if len(moves) == 2:  # results.json is out, its histories are not yet
                raise KeyboardInterrupt
        original(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(publish.os, "replace", stop_after_the_first_part)
        with pytest.raises(KeyboardInterrupt):
            workflow.train(*args, tmp_path / "stopped")
    resumed = json.loads(workflow.train(*args, tmp_path / "stopped", resume=True).read_text())
    assert _numbers(resumed) == _numbers(straight)
    assert (tmp_path / "stopped" / "results" / "histories" / "cnn.csv").is_file()
