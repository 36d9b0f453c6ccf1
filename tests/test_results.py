"""The results files: assembled with a schema version, loaded with validation, and judged by validation accuracy."""

import json
from pathlib import Path

import pytest

from cifar10_transfer.errors import UserError
from cifar10_transfer.results import (CURVES_FILE, RESULTS_FILE, SCHEMA_VERSION, assemble_results, best_model,
                                      load_curves, load_results)

ROOT = Path(__file__).resolve().parents[1]


def _entry(test: float, val: float, **extra) -> dict:
    return {"test_accuracy": test, "val_accuracy": val, **extra}


def _assembled(models: dict) -> dict:
    return assemble_results(profile="smoke", config={"seed": 3}, provenance={"weights": "none"},
                            execution={"replicas": 1}, data={"train": 8}, models=models, not_run={})


def test_assemble_results_stamps_the_schema_version_and_the_best_model():
    results = _assembled({"cnn": _entry(0.6, 0.6), "resnet50_head": _entry(0.8, 0.7)})
    assert list(results) == ["schema_version", "profile", "config", "provenance", "execution", "data", "models",
                             "not_run", "best_model"]
    assert results["schema_version"] == SCHEMA_VERSION == 2 and results["best_model"] == "resnet50_head"
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


def test_committed_version_1_files_load_and_keep_their_best_model():
    results = load_results(ROOT / RESULTS_FILE)
    assert "schema_version" not in results and best_model(results) == results["best_model"]
    curves = load_curves(ROOT / CURVES_FILE)
    assert curves is not None and curves["points"]


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
    with pytest.raises(UserError, match="schema version 3, which this code does not read"):
        load_results(bad)
    bad.write_text(json.dumps({**good, "schema_version": SCHEMA_VERSION}))
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
