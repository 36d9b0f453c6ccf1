"""`make bench` works: the benchmark script runs end to end at tiny sizes (timings not checked)."""

import json
import subprocess
import sys
from pathlib import Path

from cifar10_transfer.backbones import BACKBONES, imagenet_status

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    readme_before = (ROOT / "README.md").read_text()
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--data", "synthetic",
                             "--no-readme", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())

    assert set(report["cnn"]) == {"float32", "mixed_bfloat16", "float32_nondeterministic", "float32_xla"}
    for variant in report["cnn"].values():
        assert variant["images_per_second"] > 0 and 0 <= variant["test_accuracy"] <= 1
    assert set(report["backbones"]) == {"resnet50", "efficientnet_lite0"}
    assert report["backbones"]["efficientnet_lite0"]["weights"] == "imagenet"  # installed with pip
    resnet_cached = imagenet_status(BACKBONES["resnet50"]) == "cached"
    assert report["backbones"]["resnet50"]["weights"] == ("imagenet" if resnet_cached else "none")
    for entry in report["backbones"].values():
        features = entry["feature_extraction"]
        assert len(features["float32"]["rounds"]) == len(features["mixed_bfloat16"]["rounds"]) == 3
        assert features["speedup_bfloat16"] > 0
        assert features["cosine_similarity"]["min"] > 0.98  # same weights, two precisions
        assert entry["stage1"]["cached"]["seconds"] > 0 and entry["stage1"]["end_to_end"]["seconds"] > 0
        assert entry["fine_tuning"]["images_per_second"] > 0
    rss = report["peak_rss_gb"]
    assert 0 < rss["500"] < 8 and 0 < rss["1000"] < 8
    assert rss["growth_gb"] == rss["1000"] - rss["500"]
    assert report["hardware"] and report["device"]
    assert "| measurement | value |" in result.stdout  # the README block is printed
    assert (ROOT / "README.md").read_text() == readme_before  # --no-readme leaves it alone


def test_benchmark_without_reachable_data_fails_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--data-dir",
                             str(tmp_path / "missing"), "--no-readme", "--out", str(tmp_path / "b.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr and not (tmp_path / "b.json").exists()
