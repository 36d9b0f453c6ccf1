"""Learning curves: every point is a stage run, the JSON has every field, and cached features are reused."""

import json

import pytest

from cifar10_transfer import deck, report
from cifar10_transfer.config import make_config
from cifar10_transfer.analysis import save_curve_figures
from cifar10_transfer.curve_report import curve_findings, run_times
from cifar10_transfer.curve_stats import curve_summary
from cifar10_transfer.curves import run_learning_curves
from cifar10_transfer.data import synthetic_dataset

# every line of the curves, fine-tuning capped at the smaller size, one seed at the larger
TINY = ["curve_sizes=100,200", "curve_seeds=2", "resolution_sizes=32,48", "image_size=32", "test_size=200",
        "batch_size=50", "curve_finetune_max_size=100", "curve_single_seed_above=100"]
LINES = ("cnn", "scratch", "efficientnet_lite0_head")
TUNED = "efficientnet_lite0_finetuned"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same tiny study run twice into one OUT: the second must find every feature cached."""
    out = tmp_path_factory.mktemp("curves")
    dataset, config = synthetic_dataset(seed=3), make_config("smoke", TINY)
    first = run_learning_curves(dataset, config, "none", out / ".runs" / "first", "smoke")
    second = run_learning_curves(dataset, config, "none", out / ".runs" / "second", "smoke")
    return out, first, second


@pytest.mark.slow
def test_learning_curves_json_has_every_point_with_size_seed_accuracy_and_seconds(two_runs):
    out, first, _ = two_runs
    written = json.loads((out / ".runs" / "first" / "results" / "learning_curves.json").read_text())
    assert written == json.loads(json.dumps(first))
    points = written["points"]
    assert {(p["model"], p["train_size"], p["seed"]) for p in points} == {
        (m, 100, s) for m in LINES for s in (3, 4)} | {(m, 200, 3) for m in LINES} | {(TUNED, 100, s) for s in (3, 4)}
    for p in points:
        assert 0 <= p["test_accuracy"] <= 1 and p["seconds"] > 0
    assert [r["image_size"] for r in written["resolution"]] == [32, 48]
    for r in written["resolution"]:
        # the study size (smoke: 500) and the test images
        assert r["features_per_second"] > 0 and r["feature_seconds"] > 0 and r["images"] == 500 + 200
    assert written["provenance"]["weights"] == "none" and written["backbone"] == "efficientnet_lite0"
    summary = curve_summary(written)
    assert summary.groupby("train_size")["count"].max().to_dict() == {100: 2, 200: 1} and len(summary) == 3 * 2 + 1


@pytest.mark.slow
def test_the_second_run_does_no_backbone_pass_trains_nothing_and_gives_the_same_points(two_runs):
    _, first, second = two_runs
    # 3 lines and fine-tuning at 2 seeds of the smaller size, the 3 lines at 1 seed of the larger; 2 input sizes
    assert first["backbone_images_computed"] > 0 and first["stages_trained"] == (3 + 1) * 2 + 3 + 2
    assert second["backbone_images_computed"] == 0 and second["stages_trained"] == 0
    # both runs are recorded beside the stages, the first (which trained them) first
    assert [run["stages_trained"] for run in second["runs"]] == [13, 0]
    assert second["runs"][0]["seconds"] == first["seconds"] and second["runs"][1]["seconds"] == second["seconds"]
    trained = sum(p["seconds"] for p in second["points"]) / 60
    assert run_times(second) == (f"training of the {len(second['points'])} curve points {trained:.1f} min in all; "
                                 f"a rerun with the features and stages kept {second['seconds'] / 60:.1f} min "
                                 "wall-clock, 0 images through the backbone, 0 stages trained")
    assert [p["test_accuracy"] for p in second["points"]] == [p["test_accuracy"] for p in first["points"]]
    # a reused stage reports what training it took (a head's feature seconds are this run's)
    cnn_seconds = [[p["seconds"] for p in run["points"] if p["model"] == "cnn"] for run in (first, second)]
    assert cnn_seconds[0] == cnn_seconds[1]


def test_a_change_of_config_data_or_weights_trains_in_another_folder(tmp_path):
    from cifar10_transfer.curves import stages_root
    from cifar10_transfer.provenance import run_key

    def root(out, dataset, config, weights):
        return stages_root(out, run_key(config.to_dict(), dataset, weights))

    dataset, config = synthetic_dataset(seed=3), make_config("smoke", TINY)
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"one")
    base = root(tmp_path / ".runs" / "a", dataset, config, "none")
    assert root(tmp_path / ".runs" / "b", dataset, config, "none") == base  # another run, same inputs
    # more lines, sizes or seeds: the same stages, so a later run adds to them
    for selection in ("curve_seeds=3", "curve_sizes=100,200,400", "curve_models=cnn", "models=cnn", "seeds=3,4",
                      "curve_single_seed_above=none"):
        assert root(tmp_path / ".runs" / "b", dataset, make_config("smoke", TINY + [selection]), "none") == base
    others = {root(tmp_path / ".runs" / "a", dataset, config.replace(head_lr=0.01), "none"),
              root(tmp_path / ".runs" / "a", synthetic_dataset(seed=4), config, "none"),
              root(tmp_path / ".runs" / "a", dataset, config, "imagenet"),
              root(tmp_path / ".runs" / "a", dataset, config, str(weights))}
    weights.write_bytes(b"two")
    others.add(root(tmp_path / ".runs" / "a", dataset, config, str(weights)))
    assert base not in others and len(others) == 5


def _write_results(out, key, models):
    (out / "results").mkdir(parents=True, exist_ok=True)
    document = {"config": {}, "provenance": {"run_key": key}, "data": {}, "models": models}
    (out / "results" / "results.json").write_text(json.dumps(document))


def test_points_at_the_runs_own_size_are_its_results_only_where_config_data_weights_and_code_match(tmp_path):
    from cifar10_transfer.curves import learning_curve_points, run_points
    from cifar10_transfer.provenance import run_key

    dataset, config = synthetic_dataset(seed=3), make_config("smoke", TINY + ["curve_sizes=100,500"])
    single = {"test_accuracy": 0.5, "val_accuracy": 0.4, "seconds": 7.0, "eval_seconds": 1.0}
    seeds = {"runs": [{"seed": s, "val_accuracy": 0.6, "test_accuracy": a, "train_seconds": 9.0, "eval_seconds": 1.0}
                      for s, a in ((3, 0.61), (4, 0.62))]}
    key = run_key(config.to_dict(), dataset, "none")
    _write_results(tmp_path, key, {"cnn": single, "scratch": seeds})
    point = {"train_size": 500, "reused": True, "from_results": True}  # smoke: train_size 500, seed 3
    assert run_points(tmp_path, config, key) == {
        ("cnn", 500, 3): {"model": "cnn", "seed": 3, "test_accuracy": 0.5, "seconds": 7.0, **point},
        ("scratch", 500, 3): {"model": "scratch", "seed": 3, "test_accuracy": 0.61, "seconds": 9.0, **point},
        ("scratch", 500, 4): {"model": "scratch", "seed": 4, "test_accuracy": 0.62, "seconds": 9.0, **point}}
    assert run_points(tmp_path, config, run_key(config.replace(curve_seeds=3).to_dict(), dataset, "none"))
    others = [run_key(config.replace(cnn_epochs=2).to_dict(), dataset, "none"),
              run_key(config.replace(head_lr=0.01).to_dict(), dataset, "none"),
              run_key(config.to_dict(), synthetic_dataset(seed=4), "none"),
              run_key(config.to_dict(), dataset, "imagenet")]
    assert all(run_points(tmp_path, config, other) == {} for other in others)
    assert run_points(tmp_path / "elsewhere", config, key) == {}
    # where every stage of a size and seed is known, nothing trains there
    known = run_points(tmp_path, config, key)
    seed_3 = config.replace(curve_sizes="500", curve_models="cnn,scratch", curve_seeds=1)
    assert learning_curve_points(dataset, seed_3, "none", tmp_path / "curves", None, known) == [
        known["cnn", 500, 3], known["scratch", 500, 3]]
    assert not (tmp_path / "curves").exists()


@pytest.mark.slow
def test_figures_findings_readme_and_deck_come_from_the_curves(two_runs, tmp_path):
    _, first, _ = two_runs
    paths = save_curve_figures(first, tmp_path / "images")
    assert [p.name for p in paths] == ["learning_curve.png", "resolution_cost.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    findings = curve_findings(first)
    assert any("2 seeds (1 at 200 images) spread by at most" in line for line in findings)
    assert any(line.startswith("Labelled images for 80% test accuracy") for line in findings)
    assert any(line.startswith("Input size, one run each: the head's highest test accuracy is")
               and line.endswith(f"x faster ({first['provenance']['hardware']}).") for line in findings)
    # feature_cost recorded
    assert any("features at the measured rate of the machine that ran them" in line for line in findings)
    block = report.curves_block(first)
    assert "images/learning_curve.png" in block and "weights: none" in block
    assert findings[0] in block.replace('\\', '') and run_times(first) in block.replace('\\', '')



@pytest.mark.slow
def test_the_deck_gains_a_slide_per_curve_figure_and_one_of_gaps(two_runs, tmp_path):
    import pypdf

    from test_plots_report import CLASSES, _model

    _, first, _ = two_runs
    results = {"profile": "smoke", "config": {"head_mode": "cached", "head_lr": 0.001},
               "data": {"class_names": CLASSES},
               "provenance": first["provenance"], "models": {"cnn": _model(0.5, 356810)}, "best_model": "cnn"}
    without = pypdf.PdfReader(deck.render_deck(results, tmp_path, tmp_path / "a.pdf"))
    with_curves = pypdf.PdfReader(deck.render_deck(results, tmp_path, tmp_path / "b.pdf", first))
    assert len(with_curves.pages) == len(without.pages) + 3
    text = " ".join(" ".join(page.extract_text() for page in with_curves.pages).split())
    assert "How much labelled data transfer learning saves" in text and "Input resolution versus cost" in text
    assert "Learning curves: gaps and cost" in text and "paired by seed with a 95% t interval" in text
