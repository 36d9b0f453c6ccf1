"""`make bench` per backbone: features, stage 1, the three ways of stage 2 and the accuracy part,
merged into an earlier report (its own module, so that pytest-xdist runs it beside test_bench)."""

import json

import pytest

from test_bench import _bench

EARLIER = {"cnn": {"float32": {"images_per_second": 1.0, "test_accuracy": 0.5},
                   "mixed_bfloat16": {"images_per_second": 2.0, "test_accuracy": 0.5},
                   "float32_nondeterministic": {"images_per_second": 1.0, "test_accuracy": 0.5},
                   "float32_xla": {"images_per_second": 1.0, "test_accuracy": 0.5},
                   "run": {"started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00",
                           "hardware": "an earlier machine", "device": "CPU only", "data": "synthetic"}}}


@pytest.mark.bench
def test_quick_benchmark_of_a_backbone_merges_into_an_earlier_report(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps(EARLIER))
    # a depth that leaves a frozen prefix, so the cached-views ways are measured too
    merged = _bench("--parts", "backbones,stage2,accuracy", "--backbones", "efficientnet_lite0", "--merge",
                    "--finetune-layers", 20, "--out", out)
    assert merged.returncode == 0, merged.stderr[-3000:]
    both = json.loads(out.read_text())
    assert both["cnn"] == EARLIER["cnn"]  # kept as measured, with its own run
    assert "an earlier machine" in merged.stdout
    entry = both["backbones"]["efficientnet_lite0"]
    assert entry["weights"] == "imagenet"  # installed with pip
    features = entry["feature_extraction"]
    assert len(features["float32"]["rounds"]) == len(features["mixed_bfloat16"]["rounds"]) == 3
    assert features["speedup_bfloat16"] > 0
    assert features["cosine_similarity"]["min"] > 0.98  # same weights, two precisions
    assert entry["stage1"]["cached"]["seconds"] > 0 and entry["stage1"]["end_to_end"]["seconds"] > 0
    assert entry["fine_tuning"]["images_per_second"] > 0 and entry["fine_tuning"]["finetune_layers"] == 20
    ways = both["stage2"]["efficientnet_lite0"]
    assert all(cost > 0 for cost in ways["seconds_per_image"].values())
    assert set(ways["projection"]) == {"study", "cached_head_online", "views_1", "views_2", "views_3"}
    assert ways["finetune_layers"] == 20 and both["accuracy"]["0"]["finetune_layers"] == 20
    assert ways["projection"]["study"]["fraction_of_study"] == pytest.approx(1.0)
    assert {"0", "2"} <= set(both["accuracy"]) and all(0 <= both["accuracy"][k]["test_accuracy"] <= 1
                                                       for k in ("0", "2"))
    assert "EfficientNet-Lite0 (ImageNet): features" in merged.stdout
    assert "stage 2 on the cached prefix, K = 2" in merged.stdout and "finetune_views=2" in merged.stdout
