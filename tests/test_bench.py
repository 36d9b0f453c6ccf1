"""`make bench` works: the benchmark script runs end to end at tiny sizes (timings not checked)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cifar10_transfer.registry import BACKBONES
from cifar10_transfer.weights import imagenet_status

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402
import stage2_sizes  # noqa: E402
import stage_costs  # noqa: E402


def _bench(*args, timeout=900):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--data", "synthetic",
                           "--no-readme", *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.bench
def test_quick_benchmark_measures_the_cnn_variants_and_memory(tmp_path):
    out = tmp_path / "bench.json"
    readme_before = (ROOT / "README.md").read_text()
    result = _bench("--parts", "cnn,rss", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())

    assert set(report["cnn"]) == {"float32", "mixed_bfloat16", "float32_nondeterministic", "float32_xla", "run"}
    for label, variant in report["cnn"].items():
        assert label == "run" or (variant["images_per_second"] > 0 and 0 <= variant["test_accuracy"] <= 1)
    rss = report["peak_rss_gb"]
    assert 0 < rss["200"] < 8 and 0 < rss["400"] < 8
    assert rss["growth_gb"] == rss["400"] - rss["200"]
    assert report["cnn"]["run"]["hardware"] and report["cnn"]["run"]["device"]
    assert report["cnn"]["run"]["data"].startswith("synthetic")
    assert "| measurement | value |" in result.stdout  # the README block is printed
    assert (ROOT / "README.md").read_text() == readme_before  # --no-readme leaves it alone


@pytest.mark.bench
def test_quick_benchmark_sets_stage_two_at_two_training_sizes_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    result = _bench("--parts", "sizes", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    sizes = json.loads(out.read_text())["sizes"]
    assert (sizes["image_size"], sizes["size"]) == (64, 32)  # --quick: 64 px, and half of it
    assert set(sizes["images_per_second"]) == {"32", "64"} and min(sizes["images_per_second"].values()) > 0
    rate, val_rate = sizes["images_per_second"], sizes["val_images_per_second"]
    assert sizes["seed_profile_seconds"]["32"] == pytest.approx(10 * 8000 / rate["32"] + 10 * 2000 / val_rate)
    assert "| EfficientNet-Lite0, stage 2 online | trained at 64 px | trained at 32 px |" in result.stdout


def test_the_compared_training_size_is_the_setting_else_a_default_below_the_evaluation_size():
    lite0 = BACKBONES["efficientnet_lite0"]
    assert stage2_sizes.compared_size(lite0, 224, "128-224") == "128-224"
    assert stage2_sizes.compared_size(lite0, 224, "96") == 96
    fallback = 128 if lite0.stage2.image_size in (None, 224) else lite0.stage2.image_size
    assert stage2_sizes.compared_size(lite0, 224, None) == fallback
    assert stage2_sizes.compared_size(BACKBONES["resnet50"], 64, None) == 32


def test_projection_multiplies_per_image_costs_by_the_seed_profile_counts():
    costs = {"seconds_per_image": {"cnn_train": 0.001, "full_forward": 0.03, "end_to_end_train": 0.04,
                                   "head_train": 0.0001, "prefix_and_pooled_forward": 0.03, "view_forward": 0.025,
                                   "online_train": 0.05, "suffix_train": 0.01, "suffix_forward": 0.004}}
    ways = stage_costs.project(costs)
    assert ways["study"]["stage1"] == 10 * (8000 * 0.04 + 2000 * 0.03) + 10000 * 0.03
    assert ways["cached_head_online"]["stage2"] == ways["study"]["stage2"] == 10 * (8000 * 0.05 + 2000 * 0.03) \
        + 10000 * 0.03
    assert ways["views_2"]["stage2"] - ways["views_1"]["stage2"] == 8000 * 0.025  # one more copy per image
    assert all(way["cnn"] == 10 * 8000 * 0.001 for way in ways.values())
    # without a frozen prefix (the whole backbone unfrozen) only the online ways exist
    online = {"seconds_per_image": {key: costs["seconds_per_image"][key] for key in
                                    ("cnn_train", "full_forward", "end_to_end_train", "head_train", "online_train")}}
    assert stage_costs.project(online) == {way: ways[way] for way in ("study", "cached_head_online")}


def test_auto_weights_time_a_backbone_with_imagenet_weights_only_where_they_are_here():
    assert bench.bench_weights(BACKBONES["efficientnet_lite0"], "auto") == "imagenet"  # installed with pip
    expected = "imagenet" if imagenet_status(BACKBONES["resnet50"]) == "cached" else "none"
    assert bench.bench_weights(BACKBONES["resnet50"], "auto") == expected
    assert bench.bench_weights(BACKBONES["resnet50"], "none") == "none"


def test_benchmark_without_reachable_data_fails_in_one_line(tmp_path, capsys):
    # in this process: a subprocess would spend most of its seconds importing TensorFlow again
    out = tmp_path / "b.json"
    code = bench.command_line(["--data-dir", str(tmp_path / "missing"), "--no-readme", "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0]
    assert not out.exists()
