"""`make bench` works: the benchmark script runs end to end at tiny sizes (timings not checked)."""

import json
import subprocess
import sys
from pathlib import Path

from cifar10_transfer.backbones import BACKBONES, imagenet_status

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args, timeout=900):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--data", "synthetic",
                           "--no-readme", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_quick_benchmark_writes_every_measurement_and_merges_parts(tmp_path):
    out = tmp_path / "bench.json"
    readme_before = (ROOT / "README.md").read_text()
    result = _bench("--backbones", "resnet50", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())

    assert set(report["cnn"]) == {"float32", "mixed_bfloat16", "float32_nondeterministic", "float32_xla", "run"}
    for label, variant in report["cnn"].items():
        assert label == "run" or (variant["images_per_second"] > 0 and 0 <= variant["test_accuracy"] <= 1)
    rss = report["peak_rss_gb"]
    assert 0 < rss["500"] < 8 and 0 < rss["1000"] < 8
    assert rss["growth_gb"] == rss["1000"] - rss["500"]
    assert report["cnn"]["run"]["hardware"] and report["cnn"]["run"]["device"]
    assert report["cnn"]["run"]["data"].startswith("synthetic")
    assert "| measurement | value |" in result.stdout  # the README block is printed
    assert (ROOT / "README.md").read_text() == readme_before  # --no-readme leaves it alone

    merged = _bench("--parts", "backbones", "--backbones", "efficientnet_lite0", "--merge", "--out", out)
    assert merged.returncode == 0, merged.stderr[-3000:]
    both = json.loads(out.read_text())
    assert both["cnn"] == report["cnn"] and both["peak_rss_gb"] == report["peak_rss_gb"]  # kept as measured
    assert set(both["backbones"]) == {"resnet50", "efficientnet_lite0"}
    assert both["backbones"]["efficientnet_lite0"]["weights"] == "imagenet"  # installed with pip
    resnet_cached = imagenet_status(BACKBONES["resnet50"]) == "cached"
    assert both["backbones"]["resnet50"]["weights"] == ("imagenet" if resnet_cached else "none")
    for entry in both["backbones"].values():
        features = entry["feature_extraction"]
        assert len(features["float32"]["rounds"]) == len(features["mixed_bfloat16"]["rounds"]) == 3
        assert features["speedup_bfloat16"] > 0
        assert features["cosine_similarity"]["min"] > 0.98  # same weights, two precisions
        assert entry["stage1"]["cached"]["seconds"] > 0 and entry["stage1"]["end_to_end"]["seconds"] > 0
        assert entry["fine_tuning"]["images_per_second"] > 0
    assert "EfficientNet-Lite0 (ImageNet): features" in merged.stdout and "ResNet50" in merged.stdout


def test_benchmark_without_reachable_data_fails_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--data-dir",
                             str(tmp_path / "missing"), "--no-readme", "--out", str(tmp_path / "b.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr and not (tmp_path / "b.json").exists()
