import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
from dataclasses import replace

import numpy as np
import pytest

from cifar10_transfer import training
from cifar10_transfer.config import make_config
from cifar10_transfer.data import synthetic_dataset
from cifar10_transfer.errors import UserError
from cifar10_transfer.models import build_cnn, compile_classifier
from cifar10_transfer.pipelines import cnn_dataset
from cifar10_transfer.recipe import ScratchRecipe, Stage2Recipe
from cifar10_transfer.registry import BACKBONES
from cifar10_transfer.runs import run_all
from cifar10_transfer.stages import Run
from cifar10_transfer.execution import make_strategy, precision_choice, precision_policy, resolve_jit, resolve_precision
from cifar10_transfer.training import fit_stage, read_history, scratch_schedule, stage2_schedule

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("gpus, flags, model, expected", [
    ([(9, 0)], set(), "resnet50", "mixed_float16"),
    ([(8, 0), (7, 0)], set(), "resnet50", "mixed_float16"),
    ([(9, 0)], set(), "cnn", "float32"),  # the CNN stays float32 under auto
    ([(6, 1)], set(), "resnet50", "float32"),  # no tensor cores
    ([], {"avx512_bf16"}, "resnet50", "mixed_bfloat16"),
    ([], {"amx_bf16", "avx512f"}, "resnet50", "mixed_bfloat16"),
    ([], {"avx512_bf16"}, "cnn", "float32"),  # the CNN stays float32 on CPUs
    ([], {"avx2"}, "resnet50", "float32"),
    ([], {"avx512_bf16"}, "efficientnet_lite0", "float32"),  # bfloat16 measured slower for it on CPUs
    ([(9, 0)], set(), "efficientnet_lite0", "mixed_float16"),
])
def test_auto_precision(gpus, flags, model, expected):
    backbone = None if model == "cnn" else BACKBONES[model]
    assert resolve_precision("auto", backbone, gpus=gpus, flags=flags) == expected


def test_explicit_precision_wins():
    assert resolve_precision("float32", BACKBONES["resnet50"], gpus=[(9, 0)], flags=set()) == "float32"


def test_the_precision_choice_says_why_in_words_results_json_records():
    lite0, resnet = BACKBONES["efficientnet_lite0"], BACKBONES["resnet50"]
    assert precision_choice("auto", lite0, gpus=[], flags={"avx2"}) == (
        "float32", "auto: float32 on a CPU without native bfloat16 (no avx512_bf16 or amx_bf16)")
    assert precision_choice("auto", lite0, gpus=[], flags={"amx_bf16"}) == (
        "float32", "auto: float32 on a CPU with amx_bf16: make bench measured bfloat16 slower for EfficientNet-Lite0")
    assert precision_choice("auto", resnet, gpus=[], flags={"amx_bf16", "avx512_bf16"})[1] == (
        "auto: mixed_bfloat16 on a CPU with amx_bf16, avx512_bf16, where make bench measured it faster than float32 "
        "for ResNet50")
    assert precision_choice("mixed_float16", None) == ("mixed_float16", "set: precision=mixed_float16")
    assert precision_choice("auto", None)[0] == "float32"


def test_mixed_policy_keeps_softmax_float32_and_is_restored():
    before = keras.config.dtype_policy().name
    with precision_policy("mixed_bfloat16"):
        model = build_cnn()
    assert keras.config.dtype_policy().name == before
    assert model.layers[1].compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
    assert model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0).dtype == np.float32


@pytest.mark.slow
def test_bfloat16_path_trains(tmp_path):
    config = make_config("smoke", ["models=cnn,scratch", "train_size=200", "test_size=100", "scratch_width=4",
                                   "precision=mixed_bfloat16"])
    for entry in run_all(Run(config, synthetic_dataset(seed=3), "none", tmp_path, "smoke"))["models"].values():
        assert entry["precision"] == "mixed_bfloat16"
        assert np.isfinite(entry["test_loss"]) and np.isfinite(entry["history"]["loss"]).all()


@pytest.mark.slow
def test_the_cnn_and_the_scratch_stage_train_under_float16_and_xla_in_a_fresh_process(tmp_path):
    """The GPU defaults (mixed_float16 with loss scaling, XLA) as far as a CPU runs them: the CNN's Adam, and
    the ResNet from scratch's SGD with its per-step schedule, under loss scaling and compiled.

    A fresh process, because op determinism enabled by other tests would make Keras drop XLA."""
    result = subprocess.run(_cli("--set", "precision=mixed_float16", "--set", "jit_compile=on",
                                 "--set", "deterministic=false", "--set", "models=cnn,scratch", "--set", "cnn_epochs=1",
                                 "--set", "train_size=500", "--set", "scratch_width=4", "--set", "scratch_epochs=2",
                                 out=tmp_path),
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "support `jit_compile=True`" not in result.stderr  # Keras's warning when it drops XLA
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["execution"]["jit_compile"] is True
    for stage in ("cnn", "scratch"):
        entry = results["models"][stage]
        assert entry["precision"] == "mixed_float16" and np.isfinite(entry["history"]["loss"]).all()


def test_xla_and_determinism_exclude_each_other():
    from cifar10_transfer.errors import UserError

    with pytest.raises(UserError, match="needs deterministic=false"):
        make_config("seed", ["jit_compile=on"])
    assert resolve_jit("auto", deterministic=True) is False


def test_cpu_defaults_for_jit_and_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert resolve_jit("auto", False) is False and resolve_jit("on", False) is True
    assert resolve_jit("off", False) is False
    assert make_strategy("auto").num_replicas_in_sync == 1


def test_multi_worker_without_tf_config_is_refused(monkeypatch):
    from cifar10_transfer.errors import UserError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG"):
        make_strategy("multi_worker")


def test_history_keeps_each_epoch_once(tmp_path):
    log = tmp_path / "history.csv"
    log.write_text("epoch,accuracy,loss\n0,0.1,2.0\n1,0.2,1.5\n1,0.25,1.4\n2,0.3,1.2\n")
    assert read_history(log) == {"accuracy": [0.1, 0.25, 0.3], "loss": [2.0, 1.4, 1.2]}


def _small_fit(stage_dir, epochs=2):
    keras.utils.set_random_seed(0)
    data = synthetic_dataset(seed=0, train_per_class=20, test_per_class=5)
    model = build_cnn()
    compile_classifier(model, 1e-3, False)
    result = fit_stage(model, cnn_dataset(data.x_train, data.y_train, 32), cnn_dataset(data.x_test, data.y_test, 32),
                       epochs, stage_dir, len(data.y_train), verbose=0)
    return model, result


def test_a_completed_stage_is_loaded_not_trained_again(tmp_path):
    model, first = _small_fit(tmp_path / "stage")
    assert first.epochs == 2 and len(first.history["loss"]) == 2 and first.seconds > 0
    assert first.images_per_second == pytest.approx(200 * 2 / first.seconds)
    again, second = _small_fit(tmp_path / "stage")
    assert not first.reused and second.reused
    assert replace(second, reused=False) == first
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("damage, reason", [
    (lambda d: (d / "final.weights.h5").write_bytes(b"garbage"), "weights digest mismatch"),
    pytest.param(lambda d: (d / "final.weights.h5").unlink(), "final.weights.h5 missing", marks=pytest.mark.slow),
    pytest.param(lambda d: (d / "stage.json").write_text("{\"history\": "), "unreadable stage.json",
                 marks=pytest.mark.slow),
    pytest.param(lambda d: (d / "stage.json").write_text(json.dumps({k: v for k, v in json.loads(
        (d / "stage.json").read_text()).items() if k != "weights_sha256"})), "stage.json without a weights digest",
        marks=pytest.mark.slow),
])
def test_a_damaged_kept_stage_is_trained_again_to_the_same_numbers(tmp_path, capsys, damage, reason):
    model, first = _small_fit(tmp_path / "stage")
    damage(tmp_path / "stage")
    capsys.readouterr()
    again, second = _small_fit(tmp_path / "stage")
    assert capsys.readouterr().out.splitlines()[0] == (f"stage: retraining the stage kept in {tmp_path / 'stage'} "
                                                       f"({reason})")
    timeless = lambda history: {k: v for k, v in history.items() if k != "epoch_seconds"}  # noqa: E731
    assert not second.reused and timeless(second.history) == timeless(first.history)
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert _small_fit(tmp_path / "stage")[1].reused  # repaired: kept again


def test_a_resume_whose_checkpoints_are_both_damaged_restarts_the_stage(tmp_path, capsys):
    model, first = _small_fit(tmp_path / "clean" / "stage", epochs=2)
    stage = tmp_path / "stage"  # the same stage name: its randomness derives from it
    (stage / "backup").mkdir(parents=True)
    (stage / "history.csv").write_text("epoch,loss\n0,9.0\n")  # a killed run's first epoch
    for name in ("latest.weights.h5", "latest.weights.h5.bkp"):
        (stage / "backup" / name).write_bytes(b"\x89HDF\r\n cut short")
    again, second = _small_fit(stage, epochs=2)
    assert "restarting the stage from its first epoch: its checkpoint in" in capsys.readouterr().out
    assert second.history["loss"] == first.history["loss"] and second.history["val_loss"] == first.history["val_loss"]


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path):
    stage = tmp_path / "stage"
    (stage / "backup").mkdir(parents=True)
    (stage / "history.csv").write_text("epoch,loss\n0,9.0\n")
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    other.save_weights(stage / "backup" / "latest.weights.h5")
    with pytest.raises(UserError, match=r"checkpoint .*latest\.weights\.h5 does not fit this stage"):
        _small_fit(stage)


def test_cosine_schedule_falls_from_the_full_rate_per_epoch(tmp_path):
    keras.utils.set_random_seed(0)
    data = synthetic_dataset(seed=0, train_per_class=10, test_per_class=5)
    model = build_cnn()
    compile_classifier(model, 2e-3, False)
    result = fit_stage(model, cnn_dataset(data.x_train, data.y_train, 32), cnn_dataset(data.x_test, data.y_test, 32),
                       4, tmp_path / "stage", len(data.y_train),
                       callbacks=(stage2_schedule(Stage2Recipe(1, 2e-3, "cosine"), 4),),
                       verbose=0)
    expected = [2e-3 * (1 + math.cos(math.pi * epoch / 4)) / 2 for epoch in range(4)]  # 2e-3 ... 2.9e-4
    assert result.history["learning_rate"] == pytest.approx(expected, rel=1e-6)


def test_the_scratch_schedule_warms_up_then_falls_as_a_cosine_per_step():
    schedule = scratch_schedule(ScratchRecipe(learning_rate=0.05, warmup=0.2), 128, 100)  # peak 0.1 at batch 128
    at = lambda step: float(schedule(step))  # noqa: E731
    assert [at(0), at(10), at(20)] == pytest.approx([0.0, 0.05, 0.1])  # linear over the first 20 steps
    for step in (20, 40, 60, 99):
        assert at(step) == pytest.approx(0.1 * (1 + math.cos(math.pi * (step - 20) / 80)) / 2, rel=1e-5, abs=1e-7)
    assert at(100) == pytest.approx(0.0, abs=1e-9) and at(150) == pytest.approx(0.0, abs=1e-9)


def _scratch_run(workdir):
    config = make_config("smoke", ["models=scratch", "train_size=100", "test_size=50", "batch_size=20",
                                   "scratch_width=4", "scratch_epochs=2"])
    return Run(config, synthetic_dataset(seed=3), "none", workdir, "smoke", save_models=False)


@pytest.mark.slow
def test_a_scratch_stage_stopped_after_an_epoch_resumes_to_the_numbers_of_one_never_stopped(tmp_path, monkeypatch):
    def stop_at_the_second_epoch(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        start(self, epoch, logs)

    straight = run_all(_scratch_run(tmp_path / "straight"))["models"]["scratch"]
    start = training._EpochSeeds.on_epoch_begin
    with monkeypatch.context() as patch:
        patch.setattr(training._EpochSeeds, "on_epoch_begin", stop_at_the_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            run_all(_scratch_run(tmp_path / "stopped"))
    resumed = run_all(_scratch_run(tmp_path / "stopped"))["models"]["scratch"]
    for key in ("loss", "val_loss", "learning_rate"):  # the rate per step came back with the optimizer's state
        assert resumed["history"][key] == straight["history"][key]
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    assert straight["recipe"] == {**ScratchRecipe().to_dict(), "width": 4}


def test_plateau_schedule_is_the_studys():
    plateau = stage2_schedule(Stage2Recipe(1, 1e-5, "plateau"), 10)
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau)
    assert (plateau.monitor, plateau.factor, plateau.patience) == ("val_loss", 0.5, 2)


def _cnn_results(tmp_path, name):
    config = make_config("smoke", ["models=cnn", "cnn_epochs=2", "train_size=1000"])
    return run_all(Run(config, synthetic_dataset(seed=3), "none", tmp_path / name, "smoke"))["models"]["cnn"]


@pytest.mark.slow
def test_same_seed_gives_identical_runs(tmp_path):
    first, second = _cnn_results(tmp_path, "a"), _cnn_results(tmp_path, "b")
    assert first["history"] == second["history"]
    assert first["test_accuracy"] == second["test_accuracy"]
    assert first["confusion_matrix"] == second["confusion_matrix"]


def test_every_stage_writes_tensorboard_logs(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _cnn_results(tmp_path, "logged")
    logs = tmp_path / "logged" / "logs" / "cnn"
    train, validation = EventAccumulator(str(logs / "train")), EventAccumulator(str(logs / "validation"))
    train.Reload(), validation.Reload()
    assert "keras" in train.Tags()["tensors"]  # the model graph (TensorBoard's conceptual graph)
    assert [event.step for event in train.Tensors("epoch_loss")] == [0, 1]
    assert [event.step for event in validation.Tensors("epoch_accuracy")] == [0, 1]


def _cli(*args, out):
    return [sys.executable, "-m", "cifar10_transfer", "train", "--profile", "smoke", "--data", "synthetic",
            "--weights", "none", "--out", str(out), "--set", "models=cnn", "--set", "cnn_epochs=4",
            "--set", "train_size=3000", "--set", "test_size=500", *args]


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_epoch(tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(_cli(out=out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    history = None
    while time.time() < deadline and process.poll() is None:
        found = list(out.glob(".runs/*/stages/cnn/history.csv"))
        if found and list(out.glob(".runs/*/stages/cnn/backup/training_metadata.json")):
            history = found[0]
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    assert history is not None, "the run finished or stalled before it could be killed after epoch 1"
    assert process.returncode == -signal.SIGKILL
    assert not (out / "results" / "results.json").exists()  # nothing published by the killed run
    first_rows = history.read_text().splitlines()
    assert 2 <= len(first_rows) < 5
    finished = subprocess.run(_cli("--resume", out=out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    rows = history.read_text().splitlines()
    assert rows[:len(first_rows)] == first_rows  # the epochs done before the kill were kept, not redone
    epochs = [int(row.split(",")[0]) for row in rows[1:]]
    assert epochs.count(0) == 1 and sorted(set(epochs)) == [0, 1, 2, 3]  # epoch 0 was not trained again
    results = json.loads((out / "results" / "results.json").read_text())
    assert results["models"]["cnn"]["epochs"] == 4 and len(results["models"]["cnn"]["history"]["loss"]) == 4


def test_predict_traces_its_step_once_and_gives_what_keras_gives():
    """Keras would trace its predict step again for a shorter last batch (seconds for a backbone on a CPU)."""
    keras.utils.set_random_seed(0)
    model, rng = build_cnn(), np.random.default_rng(0)
    dataset = cnn_dataset(rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 10, 8)
    traces, step = [], model.predict_step
    model.predict_step = lambda data: traces.append(data) or step(data)
    probabilities = training.predict(model, dataset)
    assert len(traces) == 1 and probabilities.shape == (20, 10)
    np.testing.assert_array_equal(probabilities, model.predict(dataset, verbose=0))
