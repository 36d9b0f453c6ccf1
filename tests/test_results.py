"""The results files: assembled with a schema version, loaded with validation, and judged by validation accuracy."""

import json
import math
from pathlib import Path

import pytest

import numpy as np

from cifar10_transfer.analysis import save_eda_summary
from cifar10_transfer.data import Dataset
from cifar10_transfer.errors import UserError
from cifar10_transfer.report import results_table_markdown
from cifar10_transfer.results import (SCHEMA_VERSION, assemble_results, best_model,
                                      combine_seeds, difference_interval, load_curves, load_eda, load_results,
                                      single_view_test_accuracy, summarise_seeds, training_seconds)

DATA = Path(__file__).resolve().parent / "data"  # files from before schema versions (commits af07144, 65e6897)


def _entry(test: float, val: float, **extra) -> dict:
    return {"test_accuracy": test, "val_accuracy": val, **extra}


def _assembled(models: dict) -> dict:
    return assemble_results(profile="smoke", config={"seed": 3}, provenance={"weights": "none"},
                            execution={"replicas": 1}, data={"train": 8}, models=models, not_run={})


def test_assemble_results_stamps_the_schema_version_and_the_best_model():
    results = _assembled({"cnn": _entry(0.6, 0.6), "resnet50_head": _entry(0.8, 0.7)})
    assert list(results) == ["schema_version", "profile", "config", "provenance", "execution", "data", "models",
                             "not_run", "best_model"]
    assert results["schema_version"] == SCHEMA_VERSION == 3 and results["best_model"] == "resnet50_head"
    assert _assembled({})["best_model"] is None


def test_the_best_model_is_chosen_by_validation_never_by_test_accuracy():
    models = {"cnn": _entry(0.60, 0.58), "resnet50_head": _entry(0.88, 0.86), "resnet50_finetuned": _entry(0.87, 0.89)}
    assert max(models, key=lambda name: models[name]["test_accuracy"]) == "resnet50_head"  # test would pick this
    assert best_model({"models": models}) == "resnet50_finetuned"
    # a stored choice (version 1 files chose by test accuracy) is not trusted
    assert best_model({"models": models, "best_model": "resnet50_head"}) == "resnet50_finetuned"


def test_under_test_time_flip_the_mirror_averaged_validation_accuracy_decides():
    models = {"resnet50_head": _entry(0.88, 0.86, test_time_flip={"val_accuracy": 0.90}),
              "resnet50_finetuned": _entry(0.89, 0.89, test_time_flip={"val_accuracy": 0.88})}
    assert best_model({"models": models}) == "resnet50_head"


def test_version_1_files_load_keep_their_best_model_and_render():
    results = load_results(DATA / "results_v1.json")
    assert "schema_version" not in results and best_model(results) == results["best_model"]
    assert "| EfficientNet-Lite0 fine-tuned | — | 89.8% | 1 seed | — | 90.2% | 2,375 + 192 |" in (
        results_table_markdown(results))
    curves = load_curves(DATA / "learning_curves_v1.json")
    assert "schema_version" not in curves and curves["points"]


def test_a_missing_unreadable_incomplete_or_newer_results_file_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist: run .*make reproduce"):
        load_results(tmp_path / "missing.json")
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a readable results file .*make reproduce"):
        load_results(bad)
    bad.write_text(json.dumps({"models": {}, "config": []}))
    with pytest.raises(UserError, match="lacks config, provenance, data: "):
        load_results(bad)
    good = {"config": {}, "provenance": {}, "data": {}, "models": {"cnn": _entry(0.6, 0.6)}}
    bad.write_text(json.dumps({**good, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(UserError, match="schema version 4, which this code does not read"):
        load_results(bad)
    for version in (2, SCHEMA_VERSION):
        bad.write_text(json.dumps({**good, "schema_version": version}))
        assert load_results(bad)["models"]["cnn"]["test_accuracy"] == 0.6


def test_learning_curves_are_optional_but_must_be_complete(tmp_path):
    assert load_curves(tmp_path / "missing.json") is None
    path = tmp_path / "learning_curves.json"
    path.write_text(json.dumps({"backbone": "efficientnet_lite0", "points": []}))
    with pytest.raises(UserError, match="lacks provenance, resolution"):
        load_curves(path)
    path.write_text("[")
    with pytest.raises(UserError, match="not a readable learning-curves file"):
        load_curves(path)
    for error in (lambda: load_curves(path), lambda: load_results(path)):
        with pytest.raises(UserError) as caught:
            error()
        assert "\n" not in str(caught.value)


def test_a_spread_over_seeds_is_the_mean_the_sample_deviation_and_a_student_t_interval():
    found = summarise_seeds([0.90, 0.92, 0.94])
    assert found["n"] == 3 and found["mean"] == pytest.approx(0.92) and found["sd"] == pytest.approx(0.02)
    half = 4.302653 * 0.02 / 3 ** 0.5  # t(0.975, 2 degrees of freedom) times the standard error
    assert found["ci95"] == pytest.approx([0.92 - half, 0.92 + half])
    two = summarise_seeds([0.5, 0.7])  # t(0.975, 1) = 12.706: two seeds bound the mean only loosely
    assert two["sd"] == pytest.approx(0.141421, rel=1e-5) and two["ci95"] == pytest.approx([-0.6706, 1.8706], rel=1e-4)
    with pytest.raises(ValueError, match="two or more values, got 1"):
        summarise_seeds([0.9])


def _seed_entry(val: float, test: float, flip_val: float | None, seconds: float) -> dict:
    entry = {"test_accuracy": test, "val_accuracy": val, "seconds": seconds, "eval_seconds": seconds / 10,
             "test_loss": 1 - test, "history": {"val_accuracy": [val]}}
    if flip_val is None:
        return entry
    return {**entry, "test_time_flip": {"val_accuracy": flip_val, "single_view_val_accuracy": val,
                                        "single_view_test_accuracy": test - 0.01}}


def test_a_stage_over_seeds_holds_each_run_their_means_and_the_median_runs_details():
    entries = {3: _seed_entry(0.80, 0.81, 0.82, 30.0), 4: _seed_entry(0.70, 0.73, 0.74, 40.0),
               5: _seed_entry(0.75, 0.77, 0.78, 50.0)}
    combined = combine_seeds(entries)
    assert combined["runs"][1] == {"seed": 4, "val_accuracy": 0.74, "test_accuracy": 0.73, "train_seconds": 40.0,
                                   "eval_seconds": 4.0, "single_view_val_accuracy": 0.70,
                                   "single_view_test_accuracy": 0.72}
    assert [run["seed"] for run in combined["runs"]] == [3, 4, 5] and combined["evaluation"] == "flip"
    # seed 5's mirror-averaged validation accuracy, 0.78, is the median of 0.82, 0.74, 0.78
    assert combined["shown_seed"] == 5 and combined["history"] == {"val_accuracy": [0.75]}
    assert (combined["seconds"], combined["test_loss"]) == (50.0, entries[5]["test_loss"])
    assert combined["val_accuracy"] == pytest.approx(0.78) and combined["test_accuracy"] == pytest.approx(0.77)
    assert combined["over_seeds"]["test_accuracy"]["sd"] == pytest.approx(0.04)
    assert combined["over_seeds"]["test_accuracy"]["ci95"] == pytest.approx([0.77 - 4.302653 * 0.04 / 3 ** 0.5,
                                                                             0.77 + 4.302653 * 0.04 / 3 ** 0.5])
    assert combined["test_time_flip"] == pytest.approx({"val_accuracy": 0.78, "single_view_val_accuracy": 0.75,
                                                        "single_view_test_accuracy": 0.76})
    single = combine_seeds({7: _seed_entry(0.80, 0.81, None, 3.0), 8: _seed_entry(0.70, 0.73, None, 4.0)})
    assert single["evaluation"] == "single_view" and single["shown_seed"] == 8  # the lower of two middles
    assert set(single["over_seeds"]) == {"val_accuracy", "test_accuracy"}


def test_training_seconds_are_the_mean_over_seeds_like_the_accuracies_and_add_the_head_to_stage_2():
    head = combine_seeds({3: _seed_entry(0.8, 0.8, None, 10.0), 4: _seed_entry(0.7, 0.7, None, 20.0),
                          5: _seed_entry(0.9, 0.9, None, 60.0)})
    assert head["seconds"] == 10.0  # the median run's (seed 3), which describes one model
    models = {"resnet50_head": head, "resnet50_finetuned": {"seconds": 100.0}}
    assert training_seconds(models, "resnet50_head") == pytest.approx(30.0)
    assert training_seconds(models, "resnet50_finetuned") == pytest.approx(130.0)


def test_over_seeds_the_best_model_has_the_highest_mean_validation_accuracy():
    def stage(*vals):
        return combine_seeds({seed: _seed_entry(val, val, val, 1.0) for seed, val in enumerate(vals)})

    # the head has the best single run and the best median run, the fine-tuned stage the best mean
    models = {"resnet50_head": stage(0.90, 0.80, 0.70), "resnet50_finetuned": stage(0.79, 0.82, 0.81)}
    assert models["resnet50_head"]["history"]["val_accuracy"] == [0.80]
    assert best_model({"models": models}) == "resnet50_finetuned"
    # the stored means are not what decides: the runs are
    models["resnet50_head"]["test_time_flip"]["val_accuracy"] = models["resnet50_head"]["val_accuracy"] = 0.99
    assert best_model({"models": models}) == "resnet50_finetuned"


def test_a_difference_interval_adds_the_test_sets_binomial_error_and_the_seeds_spread():
    cnn, tuned = {"test_accuracy": 0.6}, {"test_accuracy": 0.9}
    difference, low, high = difference_interval(tuned, cnn, 10_000)
    half = 1.959964 * math.sqrt((0.9 * 0.1 + 0.6 * 0.4) / 10_000)  # single runs: the normal quantile
    assert difference == pytest.approx(0.3) and (low, high) == pytest.approx((0.3 - half, 0.3 + half))
    seeded = {**tuned, "over_seeds": {"test_accuracy": {"sd": 0.01, "n": 3}}}
    _, low, high = difference_interval(seeded, cnn, 10_000)
    half = 4.302653 * math.sqrt((0.9 * 0.1 + 0.6 * 0.4) / 10_000 + 0.01 ** 2 / 3)  # Student t, 2 degrees of freedom
    assert (low, high) == pytest.approx((0.3 - half, 0.3 + half))


def test_single_views_are_compared_where_a_run_also_averaged_the_mirror():
    flipped = {"test_accuracy": 0.604, "test_time_flip": {"single_view_test_accuracy": 0.588}}
    assert single_view_test_accuracy(flipped) == 0.588 and single_view_test_accuracy({"test_accuracy": 0.7}) == 0.7
    difference, _, _ = difference_interval(flipped, {"test_accuracy": 0.5}, 1000, single_view=True)
    assert difference == pytest.approx(0.088)


def test_notebook_01s_summary_holds_the_class_table_and_keyed_findings_and_loads_back(tmp_path):
    x = np.zeros((4, 32, 32, 3), np.uint8)
    x[:2, ..., 2] = 200  # two blue "ship" images
    x[2:, ..., 0] = 100  # two red "frog" images
    data = Dataset(x, np.array([0, 0, 1, 1]), x[:1], np.array([0]), ("ship", "frog"), "synthetic test")
    assert load_eda(tmp_path / "eda.json") is None  # a run from before notebook 01 wrote one
    written = save_eda_summary(data, tmp_path / "results" / "eda.json")
    loaded = load_eda(tmp_path / "results" / "eda.json")
    assert loaded == written and loaded["data"] == "synthetic test"
    assert loaded["classes"]["ship"]["train"] == 2 and loaded["classes"]["frog"]["mean_r"] == 100.0
    assert list(loaded["findings"]) == ["data", "size", "brightness", "colour"]
    assert loaded["findings"]["size"].endswith("the training set is perfectly balanced.")
    assert loaded["findings"]["colour"].startswith("Ship images are the most blue-tinted (blue exceeds the "
                                                   "red/green mean by 200.0 of 255), frog the least (-50.0)")
