"""The stages of a run on tiny inputs: cached flips, end-to-end head, fine-tuning, reuse of finished stages."""

import json
import statistics
import subprocess
import sys

import numpy as np
import pytest

from cifar10_transfer.cache import FeatureCache
from cifar10_transfer.config import make_config
from cifar10_transfer.data import synthetic_dataset
from cifar10_transfer.pipelines import transfer_dataset
from cifar10_transfer.runs import results, run_all
from cifar10_transfer.registry import BACKBONES
from cifar10_transfer.stages import Run, run_stage
from cifar10_transfer.execution import precision_choice

TINY = ["image_size=32", "train_size=100", "test_size=50", "batch_size=25", "head_epochs=1", "finetune_epochs=1",
        "models=resnet50_finetuned"]


def _run(tmp_path, *overrides):
    config = make_config("smoke", [*TINY, *overrides])
    return Run(config, synthetic_dataset(seed=3), "none", tmp_path, "smoke")


def _images(transfer, x, y, mirrored, size=32):
    """The test images as the run's transfer stages read them (32 px unless said, batches of 25)."""
    return transfer_dataset(x, y, size, 25, transfer.preprocess, flip=mirrored)


@pytest.mark.slow
def test_cached_flips_double_the_head_examples_and_fine_tuning_unfreezes(tmp_path):
    run = _run(tmp_path, "cache_flips=true")
    found = run_all(run)
    head, finetuned = found["models"]["resnet50_head"], found["models"]["resnet50_finetuned"]
    transfer, cache, s = run.transfers["resnet50"], run.cache, run.splits
    # stage 1: train, val, test and flipped train images; stage 2: two augmented views of the train images
    assert cache.computed == 80 + 20 + 50 + 80 + 2 * 80
    # fine-tuning changed the backbone's weights, so its features are a new entry, computed afresh
    flipped = cache.pooled(transfer, run.dataset, "train", s.train_index, 32, 25, view="flip")
    assert flipped.shape == (80, 2048) and cache.computed == 80 + 20 + 50 + 80 + 2 * 80 + 80
    assert not np.allclose(flipped, cache.pooled(transfer, run.dataset, "train", s.train_index, 32, 25))
    assert head["trainable_params"] == 527_114 and finetuned["trainable_params"] > head["trainable_params"]
    assert head["precision"] == finetuned["precision"]
    assert finetuned["stage2"] == {"layers": 30, "learning_rate": 1e-5, "schedule": "plateau", "label_smoothing": 0.0,
                                   "batchnorm": "frozen", "drop_path": 0.0, "views": 2, "image_size": None}
    assert sum(map(sum, finetuned["confusion_matrix"])) == 50


def _assert_flip_evaluation(run, splits, model, views):
    """The stage's test probabilities are the mean of `model`'s direct predictions of the plain
    and mirrored test images, and its recorded accuracies are those of the views on val and test.
    `views(split, mirrored)` is the dataset `model` reads."""
    plain, mirrored = (model.predict(views("test", m), verbose=0) for m in (False, True))
    plain_val, mirrored_val = (model.predict(views("val", m), verbose=0) for m in (False, True))
    assert not np.allclose(plain, mirrored, atol=1e-3)  # the mirror is a second view, not the same one
    np.testing.assert_allclose(run.probabilities, (plain + mirrored) / 2, atol=1e-5)
    flip = run.details["test_time_flip"]
    assert flip["single_view_test_accuracy"] == float((plain.argmax(1) == splits.y_test).mean())
    assert flip["single_view_val_accuracy"] == float((plain_val.argmax(1) == splits.y_val).mean())
    assert flip["val_accuracy"] == float(((plain_val + mirrored_val).argmax(1) == splits.y_val).mean())
    assert run.metrics["test_accuracy"] == float(((plain + mirrored).argmax(1) == splits.y_test).mean())


@pytest.mark.slow
def test_test_time_flip_averages_each_image_with_its_mirror_in_the_cnn_and_cached_stages(tmp_path):
    import keras

    from cifar10_transfer.pipelines import cnn_dataset
    from cifar10_transfer.publish import MODELS_DIR

    run = _run(tmp_path, "models=cnn,resnet50_finetuned", "test_time_flip=true")
    s = run.splits

    def images(split, mirrored):
        x, y = (s.x_val, s.y_val) if split == "val" else (s.x_test, s.y_test)
        return _images(run.transfers["resnet50"], x, y, mirrored)

    def cnn_images(split, mirrored):
        x, y = (s.x_val, s.y_val) if split == "val" else (s.x_test, s.y_test)
        return cnn_dataset(x[:, :, ::-1] if mirrored else x, y, 25)

    cnn = run_stage(run, "cnn")
    _assert_flip_evaluation(cnn, s, keras.models.load_model(tmp_path / MODELS_DIR / "cnn.keras"), cnn_images)
    head = run_stage(run, "resnet50_head")  # on cached pooled features of both views
    _assert_flip_evaluation(head, s, run.transfers["resnet50"].model, images)
    finetuned = run_stage(run, "resnet50_finetuned")  # on cached cut tensors of both views
    _assert_flip_evaluation(finetuned, s, run.transfers["resnet50"].model, images)
    assert results(run)["models"]["cnn"]["test_time_flip"] == run.models["cnn"].details["test_time_flip"]


@pytest.mark.slow
def test_end_to_end_head_and_finished_stages_are_reused(tmp_path):
    run = _run(tmp_path, "head_mode=end_to_end", "models=resnet50_head", "test_time_flip=true")
    first = run_all(run)
    again = run_all(_run(tmp_path, "head_mode=end_to_end", "models=resnet50_head", "test_time_flip=true"))
    s, transfer = run.splits, run.transfers["resnet50"]

    def images(split, mirrored):  # the end-to-end head reads images, as online stage 2 does
        x, y = (s.x_val, s.y_val) if split == "val" else (s.x_test, s.y_test)
        return _images(transfer, x, y, mirrored)

    _assert_flip_evaluation(run.models["resnet50_head"], s, transfer.model, images)
    assert again["models"]["resnet50_head"]["test_time_flip"] == first["models"]["resnet50_head"]["test_time_flip"]
    assert again["models"]["resnet50_head"]["seconds"] == first["models"]["resnet50_head"]["seconds"]
    assert again["models"]["resnet50_head"]["test_accuracy"] == first["models"]["resnet50_head"]["test_accuracy"]
    # the kept evaluation is read, not predicted again: its seconds are those measured the first time
    assert again["models"]["resnet50_head"]["eval_seconds"] == first["models"]["resnet50_head"]["eval_seconds"]
    assert first["not_run"] == {"cnn": "not selected", "resnet50_finetuned": "not selected"}
    assert first["models"]["resnet50_head"]["backbone"] == "resnet50"
    assert first["models"]["resnet50_head"]["weights"] == "none"


def test_an_evaluation_is_computed_once_per_key_and_a_damaged_one_again_with_one_line(tmp_path, capsys):
    from cifar10_transfer.evaluation import EVALUATION_FILE, evaluate_once, evaluation_key

    calls = []

    def evaluate():
        calls.append(1)
        return np.full((4, 10), 0.1, dtype=np.float32), {"test_time_flip": {"val_accuracy": 0.5}}

    images = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    key = evaluation_key({"seed": 3}, "ab" * 32, images)
    assert key != evaluation_key({"seed": 4}, "ab" * 32, images) != evaluation_key({"seed": 3}, "cd" * 32, images)
    assert key != evaluation_key({"seed": 3}, "ab" * 32, images + 1)
    assert key == evaluation_key({"seed": 3, "curve_seeds": 5, "models": "cnn"}, "ab" * 32, images)  # selection only
    first = evaluate_once(tmp_path, key, evaluate)
    again = evaluate_once(tmp_path, key, evaluate)
    assert len(calls) == 1 and again[1:] == first[1:]
    np.testing.assert_array_equal(again[0], first[0])
    evaluate_once(tmp_path, key + "0", evaluate)  # another key: evaluated again, silently
    assert len(calls) == 2 and capsys.readouterr().out == ""
    (tmp_path / EVALUATION_FILE).write_bytes(b"garbage")
    assert evaluate_once(tmp_path, key, evaluate)[1] == first[1] and len(calls) == 3
    assert capsys.readouterr().out == (f"{tmp_path.name}: evaluating again; {tmp_path / EVALUATION_FILE} is damaged "
                                       "(ValueError)\n")


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory):
    """One EfficientNet-Lite0 run of both stages at its default online stage 2, BatchNorm trained
    and stochastic depth on, read by two tests."""
    workdir = tmp_path_factory.mktemp("lite0")
    run = _run(workdir, "models=efficientnet_lite0_finetuned", "finetune_layers=20", "finetune_lr=0.001",
               "finetune_epochs=2", "finetune_batchnorm=train", "finetune_drop_path=0.2")
    return workdir, run, run_all(run)


@pytest.mark.slow
def test_a_second_backbone_runs_both_stages_under_its_own_names(lite0_run):
    workdir, _, found = lite0_run
    head, finetuned = found["models"]["efficientnet_lite0_head"], found["models"]["efficientnet_lite0_finetuned"]
    assert set(found["models"]) == {"efficientnet_lite0_head", "efficientnet_lite0_finetuned"}
    assert head["trainable_params"] == 1280 * 256 + 256 + 2570
    assert finetuned["stage2"] == {"layers": 20, "learning_rate": 0.001, "schedule": "cosine", "label_smoothing": 0.1,
                                   "batchnorm": "train", "drop_path": 0.2, "views": 0, "image_size": None}
    assert finetuned["training_sizes"] == [32, 32]
    assert finetuned["trainable_params"] > head["trainable_params"]
    assert head["precision"] == "float32"  # auto never picks bfloat16 for it on a CPU
    # the training and the test set's entries: its default stage 2 is online, no views cached
    assert len(list((workdir / "cache").iterdir())) == 2
    # the study's stages are listed as not run, with the reason
    assert found["not_run"] == {"cnn": "not selected", "resnet50_head": "not selected",
                                  "resnet50_finetuned": "not selected"}


@pytest.mark.slow
def test_a_saved_lite0_stage_loads_in_a_fresh_process_and_predicts_as_trained(lite0_run):
    """A saved model holds StochasticDepth layers; a new process must know them to load it."""
    workdir, run, _ = lite0_run
    images = workdir / "images.npy"
    np.save(images, run.dataset.x_test[:4].astype("float32"))
    code = ("import sys, numpy as np; from cifar10_transfer.predict import load_stage; "
            "model, _ = load_stage(sys.argv[1], 'efficientnet_lite0_finetuned'); "
            "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))")
    subprocess.run([sys.executable, "-c", code, str(workdir), str(images), str(workdir / "loaded.npy")], check=True)
    model = run.transfers["efficientnet_lite0"].model
    np.testing.assert_allclose(np.load(workdir / "loaded.npy"), model.predict(np.load(images), verbose=0), rtol=1e-5)


@pytest.mark.slow  # the real-data smoke run in `make test` trains and predicts with it too
@pytest.mark.slow
def test_stage_two_trains_at_its_own_sizes_and_is_evaluated_and_saved_at_the_evaluation_size(tmp_path):
    run = _run(tmp_path, "models=efficientnet_lite0_finetuned", "finetune_epochs=2", "image_size=64",
               "finetune_image_size=32-64", "finetune_lr=0.01")
    finetuned = run_all(run)["models"]["efficientnet_lite0_finetuned"]
    assert finetuned["stage2"]["image_size"] == "32-64" and finetuned["training_sizes"] == [32, 64]
    transfer, s = run.transfers["efficientnet_lite0"], run.splits
    assert transfer.model.input_shape == (None, 64, 64, 3)
    direct = transfer.model.evaluate(_images(transfer, s.x_val, s.y_val, False, 64), verbose=0, return_dict=True)
    assert finetuned["history"]["val_loss"][-1] == pytest.approx(direct["loss"], rel=1e-4)
    online_test = transfer.model.predict(_images(transfer, s.x_test, s.y_test, False, 64), verbose=0)
    assert finetuned["test_accuracy"] == pytest.approx(float((online_test.argmax(1) == s.y_test).mean()))
    assert json.loads((tmp_path / "models" / "efficientnet_lite0_finetuned.json").read_text())["image_size"] == 64


@pytest.mark.slow
def test_a_training_size_equal_to_the_evaluation_size_is_stage_two_as_without_one(tmp_path):
    lite0 = ["models=efficientnet_lite0_finetuned", "finetune_lr=0.01"]
    default = run_all(_run(tmp_path / "default", *lite0))["models"]["efficientnet_lite0_finetuned"]
    same = run_all(_run(tmp_path / "same", *lite0, "finetune_image_size=32"))["models"]["efficientnet_lite0_finetuned"]
    assert same["history"] == default["history"] and same["test_accuracy"] == default["test_accuracy"]
    assert same["stage2"]["image_size"] == 32 and default["stage2"]["image_size"] is None


def test_the_resnet_from_scratch_records_its_recipe_and_predicts_as_evaluated(tmp_path):
    from cifar10_transfer.predict import class_probabilities, load_stage

    run = _run(tmp_path, "models=cnn,scratch", "scratch_width=4", "scratch_epochs=2", "scratch_lr=0.1",
               "test_time_flip=true")
    found = run_all(run)
    entry = found["models"]["scratch"]
    assert list(found["models"]) == ["cnn", "scratch"] and found["not_run"] == {
        "resnet50_head": "not selected", "resnet50_finetuned": "not selected"}
    assert entry["recipe"] == {"width": 4, "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-3,
                               "label_smoothing": 0.1, "warmup": 0.2, "translate": 4}
    assert entry["epochs"] == 2 and entry["params"] == 26_630 and entry["precision"] == "float32"
    assert sum(map(sum, entry["confusion_matrix"])) == 50 and "test_time_flip" in entry
    model, card = load_stage(tmp_path, "scratch")  # what `predict` reads: 32x32 input in [0, 1], as trained
    assert (card["image_size"], card["backbone"], card["test_time_flip"]) == (None, None, True)
    np.testing.assert_allclose(class_probabilities(model, run.splits.x_test, card), run.models["scratch"].probabilities,
                               rtol=1e-5, atol=1e-6)


def test_every_seed_of_seeds_is_an_ordinary_run_and_results_summarise_them(tmp_path):
    from cifar10_transfer.publish import MODELS_DIR
    from cifar10_transfer.results import HISTORIES_DIR, RESULTS_FILE, load_results

    workdir = tmp_path / "over"
    run = _run(workdir, "models=cnn", "seeds=3,4")
    found = run_all(run)
    cnn = found["models"]["cnn"]
    assert found["schema_version"] == 3 and load_results(workdir / RESULTS_FILE) == found
    assert [r["seed"] for r in cnn["runs"]] == [3, 4] and cnn["evaluation"] == "single_view"
    assert all(r["train_seconds"] > 0 and r["eval_seconds"] > 0 for r in cnn["runs"])
    tests = [r["test_accuracy"] for r in cnn["runs"]]
    assert tests[0] != tests[1]  # two seeds, two splits and initialisations: a spread to summarise
    assert cnn["test_accuracy"] == pytest.approx(statistics.fmean(tests))
    assert cnn["val_accuracy"] == pytest.approx(statistics.fmean(r["val_accuracy"] for r in cnn["runs"]))
    spread = cnn["over_seeds"]["test_accuracy"]
    assert spread["sd"] == pytest.approx(abs(tests[0] - tests[1]) / 2 ** 0.5) and spread["n"] == 2
    assert spread["ci95"] == pytest.approx([cnn["test_accuracy"] + sign * 12.7062 * spread["sd"] / 2 ** 0.5
                                            for sign in (-1, 1)], rel=1e-4)  # t(0.975, 1 degree of freedom)
    # of two, the shown run is the one with the lower validation accuracy (seed 3 on a tie), and it
    # is the run that `seed` alone gives
    shown = min(cnn["runs"], key=lambda r: (r["val_accuracy"], r["seed"]))
    alone = run_all(_run(tmp_path / "alone", "models=cnn", f"seed={shown['seed']}"))["models"]["cnn"]
    assert (alone["val_accuracy"], alone["test_accuracy"]) == (shown["val_accuracy"], shown["test_accuracy"])
    assert cnn["shown_seed"] == shown["seed"] and cnn["history"] == alone["history"]
    assert cnn["confusion_matrix"] == alone["confusion_matrix"] and cnn["seconds"] == shown["train_seconds"]
    shown_dir = workdir / "seeds" / f"seed{shown['seed']}"
    history = (shown_dir / "stages" / "cnn" / "history.csv").read_text()
    assert (workdir / HISTORIES_DIR / "cnn.csv").read_text() == history
    card = json.loads((workdir / MODELS_DIR / "cnn.json").read_text())
    assert card == json.loads((shown_dir / MODELS_DIR / "cnn.json").read_text())
    assert run.models["cnn"].splits.y_test.shape == (50,) and found["best_model"] == "cnn"
    assert sorted(p.name for p in (workdir / "seeds").iterdir()) == ["seed3", "seed4"]
    # a new record on the same directory, as `--resume` makes: each seed's finished stage is kept, not retrained
    again = run_all(_run(workdir, "models=cnn", "seeds=3,4"))["models"]["cnn"]
    assert [(r["test_accuracy"], r["train_seconds"]) for r in again["runs"]] == [
        (r["test_accuracy"], r["train_seconds"]) for r in cnn["runs"]]


def test_long_stages_run_at_their_first_seeds_after_every_seed_of_the_short_ones(tmp_path, capsys):
    found = run_all(_run(tmp_path, "models=cnn,scratch", "seeds=3,4,5", "long_stage_seeds=2"))["models"]
    assert [r["seed"] for r in found["cnn"]["runs"]] == [3, 4, 5]
    assert [r["seed"] for r in found["scratch"]["runs"]] == [3, 4]
    assert found["scratch"]["over_seeds"]["val_accuracy"]["n"] == 2
    out = capsys.readouterr().out.splitlines()
    started = [line.split(":")[0] for line in out if line.endswith(": started")]
    assert started == ["cnn"] * 3 + ["scratch"] * 2  # stage by stage: every CNN seed before the long stage
    # what the command line and the notebooks print is what results.json records
    assert [line.split(", test accuracy")[0] for line in out if line.startswith("cnn: finished")] == [
        f"cnn: finished: {r['train_seconds']:,.0f} s training, {r['eval_seconds']:,.0f} s evaluation"
        for r in found["cnn"]["runs"]]
    assert not (tmp_path / "seeds" / "seed5" / "stages" / "scratch").exists()


def test_feature_seconds_are_images_at_the_cache_rate_else_the_measured_time(tmp_path, monkeypatch):
    from cifar10_transfer.stages import _feature_seconds

    run = _run(tmp_path)
    monkeypatch.setattr(FeatureCache, "speed", lambda self, *args: {"images_per_second": 40.0})
    assert _feature_seconds(run, None, 100, measured=0.1) == pytest.approx(2.5)  # cached or not: 100 / 40
    monkeypatch.setattr(FeatureCache, "speed", lambda self, *args: None)  # no rate recorded: this call's time
    assert _feature_seconds(run, None, 100, measured=0.1) == 0.1


@pytest.mark.slow
def test_a_heads_seconds_count_its_features_at_the_measured_rate_cached_or_not(tmp_path, monkeypatch):
    """A head whose features an earlier run computed still pays for them, at the rate the cache measured,
    so its training seconds do not depend on which seed, stage or run came first."""
    rate = {"images": 8, "seconds": 2.0, "images_per_second": 4.0}
    monkeypatch.setattr(FeatureCache, "speed", lambda self, *args: rate)
    config, cache = make_config("smoke", [*TINY, "models=efficientnet_lite0_head"]), FeatureCache(tmp_path / "cache")
    first, again = (Run(config, synthetic_dataset(seed=3), "none", tmp_path / name, "smoke", cache=cache,
                        save_models=False) for name in ("first", "again"))
    heads = [run_all(first)["models"]["efficientnet_lite0_head"]["seconds"]]
    computed = cache.computed
    heads.append(run_all(again)["models"]["efficientnet_lite0_head"]["seconds"])
    assert cache.computed == computed  # every feature of the second run came from the first run's cache
    for seconds in heads:  # 80 training and 20 validation images at 4 images/s: 25 s, plus one short epoch
        assert 25 <= seconds < 25 + 30


def test_making_a_run_record_does_no_work(tmp_path):
    run = _run(tmp_path / "lazy")
    assert not {"strategy", "splits", "jit_compile"} & set(vars(run)) and not run.models and not run.transfers
    assert not (tmp_path / "lazy").exists()


def test_a_run_in_a_run_directory_started_when_that_directory_was_made_however_often_resumed(tmp_path):
    from datetime import datetime, timezone

    from cifar10_transfer.publish import start_run

    run_dir = start_run(tmp_path, {"profile": "smoke"}, resume=False)
    first = _run(run_dir).started
    assert first == datetime.strptime(run_dir.name, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)
    assert start_run(tmp_path, {"profile": "smoke"}, resume=True) == run_dir and _run(run_dir).started == first
    by_hand = _run(tmp_path / "notebook").started  # not a run directory: started now
    assert by_hand > first and (datetime.now(timezone.utc) - by_hand).total_seconds() < 60


@pytest.mark.slow
def test_a_stage_does_not_depend_on_the_stages_run_before_it(tmp_path):
    alone = run_all(_run(tmp_path / "alone", "models=efficientnet_lite0_head"))["models"]
    after_cnn = run_all(_run(tmp_path / "after", "models=cnn,efficientnet_lite0_head"))["models"]
    head = "efficientnet_lite0_head"
    assert alone[head]["history"] == after_cnn[head]["history"]
    assert alone[head]["test_accuracy"] == after_cnn[head]["test_accuracy"]


@pytest.mark.slow
def test_online_stage_two_validates_and_tests_through_the_cached_prefix(lite0_run):
    _, run, found = lite0_run
    finetuned = found["models"]["efficientnet_lite0_finetuned"]
    assert run.cache.computed == 80 + 20 + 50  # stage 1's pass only: no view, no second pass
    assert finetuned["precision_reason"] == precision_choice("auto", BACKBONES["efficientnet_lite0"])[1]
    assert "weights_sha256" not in finetuned  # random init ("none"): no weights file to name
    transfer, s = run.transfers["efficientnet_lite0"], run.splits
    direct = transfer.model.evaluate(_images(transfer, s.x_val, s.y_val, False), verbose=0, return_dict=True)
    assert finetuned["history"]["val_loss"][-1] == pytest.approx(direct["loss"], rel=1e-4)
    assert finetuned["val_accuracy"] == pytest.approx(direct["accuracy"])
    online_test = transfer.model.predict(_images(transfer, s.x_test, s.y_test, False), verbose=0)
    assert finetuned["test_accuracy"] == pytest.approx(float((online_test.argmax(1) == s.y_test).mean()))

