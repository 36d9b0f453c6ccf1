"""research/scratch_rule.py: paired single-view gains, the time budget and the decision, on synthetic results.

Run from the repository root with `pytest research/` (`make test` collects tests/ only).
"""

import pytest
import scratch_rule


def _results(epochs: int, val: list[float], seconds: float, flip: bool = False, isa=("avx2", "fma")) -> dict:
    runs = [{"seed": seed, "val_accuracy": v + (0.01 if flip else 0), "train_seconds": seconds,
             **({"single_view_val_accuracy": v} if flip else {})} for seed, v in enumerate(val, start=3)]
    return {"config": {"scratch_epochs": epochs}, "provenance": {"cpu_isa": list(isa)},
            "models": {"scratch": {"runs": runs}}}


def test_thirty_epochs_win_only_with_a_gain_beyond_its_standard_error_within_the_budget():
    baseline = _results(20, [0.78, 0.77, 0.785], 740, flip=True)  # the reference ran with the mirror
    # gains +2.0, +2.5, +1.5 points against the single views: mean +2.0, standard error 0.29
    steady = scratch_rule.decide(baseline, _results(30, [0.80, 0.795, 0.80], 1_100))
    assert steady["mean"] == pytest.approx(0.02) and steady["se"] == pytest.approx(0.005 / 3 ** 0.5)
    assert steady["default_epochs"] == 30 and steady["baseline_seconds"] == 740
    assert scratch_rule.decide(baseline, _results(30, [0.80, 0.795, 0.80], 1_300))["default_epochs"] == 20
    # gains +1.0, -1.0, +0.5: mean +0.17 against a standard error of 0.60
    noisy = scratch_rule.decide(baseline, _results(30, [0.79, 0.76, 0.79], 1_100))
    assert noisy["default_epochs"] == 20 and noisy["why"].startswith("mean gain not larger")


def test_runs_on_cpus_with_other_instruction_sets_are_refused():
    with pytest.raises(SystemExit, match="repeat the baseline"):
        scratch_rule.decide(_results(20, [0.78] * 3, 700), _results(30, [0.8] * 3, 1_000, isa=("avx2", "amx_bf16")))


def test_the_block_gives_each_seed_the_means_and_the_decision():
    document = {**scratch_rule.decide(_results(20, [0.78, 0.77, 0.785], 740), _results(30, [0.80, 0.795, 0.80], 1_100)),
                "runs": "20 epochs: a run; 30 epochs: another"}
    lines = scratch_rule.markdown(document).splitlines()
    assert lines[2] == "| 3 | 3: +2.00, 4: +2.50, 5: +1.50 | +2.00 ± 0.29 | 740 | 1,100 |"
    assert lines[-1].startswith("Decision: 30 epochs (mean gain larger than its standard error; mean training "
                                "seconds within the budget of 1,200)")


def test_the_default_runs_test_accuracy_is_reported_after_the_decision_single_view():
    flipped = _results(30, [0.80, 0.795, 0.80], 1_100, flip=True)
    for run, (single, mirror) in zip(flipped["models"]["scratch"]["runs"], [(0.81, 0.82), (0.79, 0.80), (0.80, 0.8)]):
        run.update(test_accuracy=mirror, single_view_test_accuracy=single)
    tests = scratch_rule.default_test(flipped)
    assert tests == {3: 0.81, 4: 0.79, 5: 0.80}
    document = {**scratch_rule.decide(_results(20, [0.78] * 3, 740), flipped), "runs": "r", "default_test": tests}
    assert scratch_rule.markdown(document).splitlines()[-1] == (
        "Single-view test accuracy of the 30-epoch runs, read after the decision (3: 81.00%, 4: 79.00%, 5: 80.00%): "
        "mean 80.00%, against issue #29's target of 80% at this size.")


def test_each_round_has_its_own_record_and_a_round_without_a_committed_rule_is_refused():
    path, markers = scratch_rule.round_record(_results(30, [0.8] * 3, 740), _results(40, [0.8] * 3, 990))
    assert (path.name, markers) == ("scratch_rule_40.json", ("<!-- scratch40:start -->", "<!-- scratch40:end -->"))
    assert scratch_rule.round_record(_results(20, [0.8] * 3, 700), _results(30, [0.8] * 3, 740))[0].name == \
        "scratch_rule.json"
    with pytest.raises(SystemExit, match="no rule is committed for 50 against 40 epochs"):
        scratch_rule.round_record(_results(40, [0.8] * 3, 990), _results(50, [0.8] * 3, 1_190))
