"""research/finetune_sizes.py: reading runs by candidate, the cost bound, the margin and the decision, on
synthetic results.

Run from the repository root with `pytest research/` (`make test` collects tests/ only).
"""

import json
from pathlib import Path

import finetune_sizes
import lab_records
import pytest

COMPARISON = finetune_sizes.COMPARISONS["throughout"]


def _write_run(workdir: Path, label: str, seed: int, val: float, seconds: float) -> None:
    side = 224 if label == "224" else int(label.split()[0])
    results = {"config": {"seed": seed, "image_size": side}, "data": {"val": 400},
               "provenance": {"git_commit": "abcdef0123", "hardware": "AMD EPYC", "cpu_isa": ["avx2", "fma"]},
               "models": {"efficientnet_lite0_finetuned": {"training_sizes": [side] * 4, "seconds": seconds,
                                                          "val_accuracy": val, "test_accuracy": 0.5}}}
    path = finetune_sizes.run_dir(workdir, COMPARISON, label, seed) / "results" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(results))


@pytest.fixture
def record_here(tmp_path, monkeypatch):
    """Point the comparison's JSON and README block at a scratch copy."""
    readme = tmp_path / "README.md"
    readme.write_text("\n".join(["# lab", *COMPARISON.markers, ""]))
    monkeypatch.setattr(lab_records, "README", readme)
    comparison = finetune_sizes.Comparison(COMPARISON.name, COMPARISON.candidates, tmp_path / "out.json",
                                           COMPARISON.markers)
    return comparison, readme


@pytest.mark.parametrize("cheap_val, cheap_seconds, default", [
    ((0.850, 0.845, 0.838), 190, "128 throughout"),  # 0.17 points below 224 px, at 0.32 of its seconds
    ((0.850, 0.845, 0.838), 210, "224"),  # within the margin, but above a third of the seconds
    ((0.840, 0.835, 0.835), 190, "224"),  # within the cost bound, 0.93 points below
])
def test_a_cheaper_side_wins_only_within_the_cost_bound_and_the_margin(tmp_path, record_here, cheap_val,
                                                                         cheap_seconds, default):
    comparison, readme = record_here
    for seed, base, cheap in zip((3, 4, 5), (0.850, 0.845, 0.843), cheap_val):
        _write_run(tmp_path, "224", seed, base, 600)
        _write_run(tmp_path, "128 throughout", seed, cheap, cheap_seconds)
        _write_run(tmp_path, "96 throughout", seed, 0.70, 120)
    document = finetune_sizes.report(comparison, tmp_path)
    assert document["decision"]["default"] == default
    assert document["summary"]["224"]["mean_val_accuracy"] == pytest.approx(0.846)
    assert json.loads((tmp_path / "out.json").read_text())["decision"] == document["decision"]
    assert "| 128 throughout | 3 | 128 | 128, 128, 128, 128 |" in readme.read_text()


def test_no_decision_before_every_candidate_has_three_seeds(tmp_path, record_here):
    comparison, _ = record_here
    for label in comparison.candidates:
        _write_run(tmp_path, label, 3, 0.8, 100)
    assert finetune_sizes.report(comparison, tmp_path)["decision"]["default"] is None
