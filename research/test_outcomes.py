"""The lab's recorded outcomes: what research/README.md says its committed runs showed.

Outcomes of runs, not behaviour of the code: a new run could change them, so they stay out of
`make test` (tests/ only). Run from the repository root with `pytest research/`.
"""

import json
from pathlib import Path

import pytest
import recipe_runs

from cifar10_transfer.recipe import Stage2Recipe
from cifar10_transfer.registry import BACKBONES

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "research" / "results" / "recipe_runs"
FINETUNED = "efficientnet_lite0_finetuned"
REFERENCE_AFTER_THE_CHOICE = "cf1c015"  # the commit that holds the reference run made after the choice


def _run(name: str) -> dict:
    return json.loads((RUNS / f"{name}.json").read_text())


def test_the_test_time_flip_and_deeper_stochastic_depth_runs_are_as_the_lab_says():
    """The flip run is the single-view run of the chosen recipe again (its single views equal that run's),
    the mirror raised the CNN's and head's validation accuracy and lowered the fine-tuned stage's, and
    stochastic depth 0.3 ended below 0.2 on validation with the mirror and without."""
    flipped = _run("all-layers-3e-4-stochastic-depth-test-time-flip")["models"]
    single = _run("all-layers-3e-4-stochastic-depth")["models"]
    assert flipped[FINETUNED]["history"] == single[FINETUNED]["history"]
    assert flipped[FINETUNED]["test_time_flip"]["single_view_test_accuracy"] == single[FINETUNED]["test_accuracy"]
    assert flipped[FINETUNED]["test_time_flip"]["single_view_val_accuracy"] == pytest.approx(
        single[FINETUNED]["val_accuracy"])
    for name, raised in (("cnn", True), ("efficientnet_lite0_head", True), (FINETUNED, False)):
        flip = flipped[name]["test_time_flip"]
        assert (flip["val_accuracy"] > flip["single_view_val_accuracy"]) is raised, name
    assert flipped[FINETUNED]["test_accuracy"] > single[FINETUNED]["test_accuracy"]
    deeper = _run("all-layers-3e-4-stochastic-depth-0.3-test-time-flip")["models"]
    assert deeper[FINETUNED]["finetune_drop_path"] == 0.3 and single[FINETUNED]["finetune_drop_path"] == 0.2
    assert max(deeper[FINETUNED]["test_time_flip"]["val_accuracy"], deeper[FINETUNED]["val_accuracy"]) < (
        single[FINETUNED]["val_accuracy"])


def test_the_reference_repeated_the_flip_run_for_the_cnn_only():
    """The reference made after the choice, the flip run's configuration again on another machine, repeated
    the CNN's history to the last digit, but EfficientNet-Lite0's head differed from its first epoch."""
    flipped = _run("all-layers-3e-4-stochastic-depth-test-time-flip")
    reference = recipe_runs.load_run(REFERENCE_AFTER_THE_CHOICE)
    assert reference["config"] == flipped["config"]
    assert reference["provenance"]["data_fingerprint"] == flipped["provenance"]["data_fingerprint"]
    assert reference["models"]["cnn"]["history"] == flipped["models"]["cnn"]["history"]
    head = "efficientnet_lite0_head"
    assert reference["models"][head]["history"]["loss"][0] != flipped["models"][head]["history"]["loss"][0]


def test_the_committed_recipe_table_chose_the_registry_default_and_the_reference_runs_it():
    """The recipe the committed table chose on validation is EfficientNet-Lite0's stage 2 default,
    and the committed reference run used it, with the chosen evaluation."""
    table = json.loads((ROOT / "research" / "results" / "finetune_recipes.json").read_text())
    spec = BACKBONES[table["backbone"]]
    reference = json.loads((ROOT / "results" / "results.json").read_text())
    ran = recipe_runs.recipe_row(reference, spec.name)
    assert recipe_runs.chosen_recipe(table["runs"], spec) == (recipe_runs.recipe_words(spec, ran, True),
                                                               recipe_runs.evaluation(ran))
    assert Stage2Recipe.from_entry(reference["models"][f"{spec.name}_finetuned"]) == spec.stage2
    assert ran["epochs"] == reference["config"]["finetune_epochs"]
