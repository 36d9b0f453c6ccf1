"""research/mirror_rule.py's behaviour: paired gains, their standard error and the decision, on synthetic results.

Run from the repository root with `pytest research/` (`make test` collects tests/ only).
"""

import mirror_rule
import pytest


def _stage(single: list[float], mirrored: list[float]) -> dict:
    return {"runs": [{"seed": seed, "val_accuracy": m, "single_view_val_accuracy": s}
                     for seed, (s, m) in enumerate(zip(single, mirrored), start=3)]}


def test_a_stage_passes_only_when_its_mean_paired_gain_is_larger_than_its_standard_error():
    # gains +1.0, +0.5, +1.5 points: mean +1.0, sd 0.5, standard error 0.5 / sqrt(3) = 0.289
    steady = mirror_rule.stage_gains(_stage([0.80, 0.80, 0.80], [0.81, 0.805, 0.815]))
    assert steady["mean"] == pytest.approx(0.01) and steady["se"] == pytest.approx(0.005 / 3 ** 0.5)
    assert steady["passes"] and list(steady["gains"]) == [3, 4, 5]
    # gains +1.0, -1.0, +0.5: mean +0.17 against a standard error of 0.60
    noisy = mirror_rule.stage_gains(_stage([0.80, 0.80, 0.80], [0.81, 0.79, 0.805]))
    assert not noisy["passes"]


def test_the_mirror_becomes_the_default_only_if_every_stage_passes_and_a_single_run_cannot_pass():
    steady = _stage([0.80, 0.80, 0.80], [0.81, 0.805, 0.815])
    noisy = _stage([0.80, 0.80, 0.80], [0.81, 0.79, 0.805])
    assert mirror_rule.decide({"models": {"cnn": steady, "head": steady}})["default_test_time_flip"]
    decision = mirror_rule.decide({"models": {"cnn": steady, "head": noisy}})
    assert not decision["default_test_time_flip"] and decision["why"].startswith("head:")
    one_run = {"test_accuracy": 0.9, "test_time_flip": {"val_accuracy": 0.91, "single_view_val_accuracy": 0.9}}
    assert not mirror_rule.decide({"models": {"cnn": steady, "head": one_run}})["default_test_time_flip"]


def test_the_block_lists_every_stage_and_names_the_run():
    document = {**mirror_rule.decide({"models": {"cnn": _stage([0.8, 0.8, 0.8], [0.81, 0.805, 0.815])}}),
                "run": "profile seed, CIFAR-10 (JPEG copy), weights imagenet, commit abcdef0, a CPU"}
    lines = mirror_rule.markdown(document).splitlines()
    assert lines[2] == "| cnn | 3 | 3: +1.00, 4: +0.50, 5: +1.50 | +1.00 ± 0.29 | yes |"
    assert lines[-1] == ("Decision: the default is the mirror (test_time_flip=true) (every trained stage's mean gain "
                         "is larger than its standard error). Run: profile seed, CIFAR-10 (JPEG copy), weights "
                         "imagenet, commit abcdef0, a CPU.")
