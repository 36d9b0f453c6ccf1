"""research/scratch_budget.py: the full-profile scratch run's cost and accuracy, on synthetic results.

Run from the repository root with `pytest research/` (`make test` collects tests/ only).
"""

import scratch_budget


def _results(seconds: float, flip: bool = False) -> dict:
    stage = {"seconds": seconds, "epochs": 12, "eval_seconds": 31.0, "val_accuracy": 0.905, "test_accuracy": 0.9}
    if flip:
        stage.update(single_view_val_accuracy=0.9, single_view_test_accuracy=0.895)
    return {"profile": "full", "config": {"seed": 42}, "data": {"train": 40_000, "val": 10_000, "test": 10_000},
            "provenance": {"data": "CIFAR-10 (JPEG copy)", "git_commit": "abcdef0123", "hardware": "a CPU",
                           "cpu_isa": ["avx2", "fma"]},
            "models": {"scratch": stage}}


def test_the_budget_is_sixty_minutes_of_training_and_single_views_are_reported():
    within = scratch_budget.measure(_results(3_000.0, flip=True))
    assert within["within_budget"] and within["seconds_per_epoch"] == 250.0
    assert (within["val_accuracy"], within["test_accuracy"]) == (0.9, 0.895)
    assert not scratch_budget.measure(_results(3_601.0))["within_budget"]


def test_the_block_states_cost_accuracy_and_the_run():
    lines = scratch_budget.markdown(scratch_budget.measure(_results(3_000.0))).splitlines()
    assert lines[2] == "| 40,000 | 12 | 3,000 | 250.0 | 31 | 90.50% | 90.00% |"
    assert lines[-1] == ("Training took 50.0 minutes, within the budget of 60 minutes; test accuracy 90.00% against "
                         "issue #29's target of 93%. Run: profile full, seed 42, CIFAR-10 (JPEG copy), commit abcdef0, "
                         "a CPU, instruction sets avx2, fma.")
