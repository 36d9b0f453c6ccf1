"""The learning curves' computed findings on hand-made points: gaps, intervals, crossings, data needs, seconds."""

import math

import pytest
from scipy import stats

from cifar10_transfer import report
from cifar10_transfer.curve_report import (accuracy_table, curve_findings, gap_findings, lead_findings,
                                           learning_curve_figure, run_times, seconds_table, seed_words,
                                           spread_findings)
from cifar10_transfer.curve_stats import (curve_summary, images_for_accuracy, lead_falls_below, paired_gaps,
                                          reference_model, training_seconds, transfer_models)
HEAD, TUNED = "efficientnet_lite0_head", "efficientnet_lite0_finetuned"
# (model, size): accuracies of seeds 3, 4, 5 and seconds per point; fine-tuning ran at 500 only.
ACCURACY = {("cnn", 500): (0.30, 0.31, 0.32), ("cnn", 5000): (0.60, 0.61, 0.62),
            ("scratch", 500): (0.40, 0.42, 0.44), ("scratch", 5000): (0.80, 0.82, 0.84),
            (HEAD, 500): (0.70, 0.71, 0.75), (HEAD, 5000): (0.78, 0.80, 0.79),
            (TUNED, 500): (0.85, 0.86, 0.87)}
SECONDS = {"cnn": 1.0, "scratch": 4.0, HEAD: 2.0, TUNED: 10.0}


def _curves(accuracy=ACCURACY) -> dict:
    points = [{"model": model, "train_size": size, "seed": seed, "test_accuracy": value,
               "seconds": SECONDS[model] * size / 500, "reused": False}
              for (model, size), values in accuracy.items() for seed, value in zip((3, 4, 5), values)]
    return {"backbone": "efficientnet_lite0", "points": points, "resolution": [], "seconds": 60.0,
            "backbone_images_computed": 0, "provenance": {"data": "synthetic", "weights": "imagenet"}}


def test_gaps_are_seed_paired_means_with_a_t_interval():
    gaps = paired_gaps(_curves(), HEAD, "scratch")
    assert list(gaps.train_size) == [500, 5000] and list(gaps.seeds) == [3, 3]
    # differences per seed: 0.30, 0.29, 0.31 at 500; -0.02, -0.02, -0.05 at 5,000
    assert gaps.gap.tolist() == pytest.approx([0.30, -0.03])
    t = stats.t.ppf(0.975, 2)
    assert t == pytest.approx(4.3027, abs=1e-4)
    half = [t * 0.01 / math.sqrt(3), t * math.sqrt(0.0003) / math.sqrt(3)]
    assert (gaps.high - gaps.gap).tolist() == pytest.approx(half)
    assert (gaps.gap - gaps.low).tolist() == pytest.approx(half)
    tuned = paired_gaps(_curves(), TUNED, "scratch")  # the capped line pairs only where it ran
    assert tuned.train_size.tolist() == [500] and tuned.gap.tolist() == pytest.approx([0.44])


def test_one_seed_gives_a_gap_without_an_interval():
    one = _curves({key: values[:1] for key, values in ACCURACY.items()})
    gaps = paired_gaps(one, HEAD, "scratch")
    assert gaps.gap.tolist() == pytest.approx([0.30, -0.02]) and gaps.low.isna().all() and gaps.high.isna().all()
    assert accuracy_table(one).iloc[0, -2] == "+30.0 (1 seed, no interval)"
    # one seed has no spread: no spread finding, no error bars in the title, no "± 0.0" in the main table
    assert spread_findings(one) == [] and len(spread_findings(_curves())) == 4
    assert learning_curve_figure(one).axes[0].get_title().startswith("one seed: no error bars\n")
    results = {"config": {"train_size": 500}, "models": {"cnn": {}}}
    assert report.run_seed_spread(results, one) == {}
    assert report.run_seed_spread(results, _curves())["cnn"] == (pytest.approx(0.31), pytest.approx(0.01), 3)


def test_one_seed_above_a_size_is_said_and_left_out_of_the_spread():
    mixed = _curves({key: values[:1] if key[1] == 5000 else values for key, values in ACCURACY.items()})
    assert seed_words(curve_summary(mixed)) == "3 seeds (1 at 5,000 images)"
    assert seed_words(curve_summary(_curves())) == "3 seeds"
    # the CNN's standard deviation over seeds 3-5 at 500 images alone: 0.01
    assert spread_findings(mixed)[0] == ("Baseline CNN: 3 seeds (1 at 5,000 images) spread by at most "
                                         "±1.0 points (standard deviation), ±1.0 on average over the sizes.")
    title = learning_curve_figure(mixed).axes[0].get_title()
    assert title.startswith("error bars: mean ± standard deviation over 3 seeds (1 at 5,000 images)\n")
    gaps = paired_gaps(mixed, HEAD, "scratch")
    assert gaps.seeds.tolist() == [3, 1] and math.isnan(gaps.low.iloc[1])


def test_the_lead_ends_where_the_mean_gap_crosses_interpolated_in_log_size():
    gaps = paired_gaps(_curves(), HEAD, "scratch")
    found = lead_falls_below(gaps, 0.0)
    assert (found["before"], found["after"]) == (500, 5000)
    assert found["size"] == pytest.approx(500 * 10 ** (0.30 / 0.33))  # about 4,056
    assert lead_falls_below(gaps, 0.02)["size"] == pytest.approx(500 * 10 ** (0.28 / 0.33))
    assert lead_falls_below(gaps, -0.5) is None
    assert lead_falls_below(gaps, 0.5) == {"size": 500.0, "before": None, "after": 500}


def test_images_for_a_target_accuracy_interpolate_in_log_size_or_say_not_reached():
    summary = curve_summary(_curves())
    scratch = images_for_accuracy(summary, "scratch", 0.8)  # means 0.42 at 500, 0.82 at 5,000
    assert scratch["images"] == pytest.approx(500 * 10 ** (0.38 / 0.40)) and not scratch["at_smallest"]
    assert images_for_accuracy(summary, HEAD, 0.8) == {"images": None, "at_smallest": False,
                                                        "best": pytest.approx(0.79), "best_size": 5000}
    assert images_for_accuracy(summary, TUNED, 0.8)["at_smallest"]


def test_seconds_are_means_over_seeds_and_a_fine_tuned_model_pays_for_its_head():
    table = training_seconds(_curves())
    assert list(table.columns) == ["cnn", "scratch", HEAD, TUNED]
    assert table.loc[500].tolist() == pytest.approx([1.0, 4.0, 2.0, 12.0])
    assert table.loc[5000, "scratch"] == pytest.approx(40.0) and math.isnan(table.loc[5000, TUNED])
    assert seconds_table(_curves()).iloc[1].tolist() == [5000, "10", "40", "20", "—"]


def test_run_times_sum_the_points_training_seconds_however_many_legs_and_give_a_reruns_wall_clock():
    curves = {"points": [{"seconds": 60.0}, {"seconds": 120.0}],
              "runs": [{"seconds": 30.0, "backbone_images_computed": 900, "stages_trained": 1}]}  # a resumed run's leg
    assert run_times(curves) == "training of the 2 curve points 3.0 min in all"
    curves["runs"].append({"seconds": 6.0, "backbone_images_computed": 0, "stages_trained": 0})
    assert run_times(curves) == ("training of the 2 curve points 3.0 min in all; a rerun with the features and "
                                 "stages kept 0.1 min wall-clock, 0 images through the backbone, 0 stages trained")


def test_findings_state_the_crossing_the_data_needed_and_the_cost():
    curves = _curves()
    assert reference_model(curves) == "scratch" and transfer_models(curves) == [HEAD, TUNED]
    assert lead_findings(curves) == [
        "The EfficientNet-Lite0 head-only stops beating the ResNet from scratch between 500 and 5,000 images: "
        "the mean gap reaches 0 at about 4,100 (log interpolation).",
        "The EfficientNet-Lite0 fine-tuned beats the ResNet from scratch in the mean at every measured size "
        "(500 images, the only one it ran).",
        "Labelled images for 80% test accuracy (log interpolation): Baseline CNN not reached (best 61.0% at 5,000); "
        "ResNet from scratch about 4,500; EfficientNet-Lite0 head-only not reached (best 79.0% at 5,000); "
        "EfficientNet-Lite0 fine-tuned 500 or fewer (the smallest size measured).",
        "Labelled images for 90% test accuracy (log interpolation): Baseline CNN not reached (best 61.0% at 5,000); "
        "ResNet from scratch not reached (best 82.0% at 5,000); EfficientNet-Lite0 head-only not reached "
        "(best 79.0% at 5,000); EfficientNet-Lite0 fine-tuned not reached (best 86.0% at 500)."]
    gaps = gap_findings(curves)
    assert gaps[2] == ("EfficientNet-Lite0 head-only minus ResNet from scratch, paired by seed with a 95% t interval: "
                       "+30.0 points at 500 images (+27.5 to +32.5) and -3.0 points at 5,000 images (-7.3 to +1.3).")
    assert gaps[-1] == ("Training seconds at 5,000 images, mean over seeds (fine-tuned: with its head): "
                        "Baseline CNN 10 s; ResNet from scratch 40 s; EfficientNet-Lite0 head-only 20 s; "
                        "EfficientNet-Lite0 fine-tuned 12 s (at 500); a transfer point's seconds count only the "
                        "backbone features that no earlier point had computed, as all sizes and seeds share them.")
    # curves that record their feature cost (made since heads count every feature at the measured rate)
    assert gap_findings({**curves, "feature_cost": "measured_rate"})[-1].endswith(
        "at 500); a transfer point's seconds include its training and validation images' backbone features at the "
        "measured rate of the machine that ran them, whether or not an earlier point had computed them.")


def test_the_figure_draws_four_lines_and_marks_where_the_lead_falls_below_two_points():
    fig = learning_curve_figure(_curves())
    ax = fig.axes[0]
    assert [text.get_text() for text in fig.legends[0].get_texts()] == [
        "Baseline CNN", "ResNet from scratch (strong baseline)", "EfficientNet-Lite0 head-only",
        "EfficientNet-Lite0 fine-tuned", "lead over ResNet from scratch < 2 points"]
    markers = [line for line in ax.get_lines() if line.get_marker() == "D"]
    assert len(markers) == 1 and markers[0].get_xdata()[0] == pytest.approx(500 * 10 ** (0.28 / 0.33))
    assert "mean ± standard deviation over 3 seeds" in ax.get_title()
    # drawn at the size the deck places it, so its text is never shrunk below 9 pt there
    from matplotlib.text import Text

    from cifar10_transfer.slide_layout import PLACED, SLIDE_H, SLIDE_W
    width, height = fig.get_size_inches()
    assert width <= PLACED["learning_curve"][2] * SLIDE_W and height <= PLACED["learning_curve"][3] * SLIDE_H
    assert min(t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip()) >= 9


def test_curves_without_the_scratch_line_measure_the_head_against_the_cnn():
    curves = _curves({key: values for key, values in ACCURACY.items() if key[0] in ("cnn", HEAD)})
    assert reference_model(curves) == "cnn" and transfer_models(curves) == [HEAD]
    assert curve_findings(curves)[0] == ("The EfficientNet-Lite0 head-only beats the Baseline CNN in the mean at "
                                         "every measured size (500 to 5,000 images).")
    block = report.curves_block(curves)
    assert ("| images | Baseline CNN | EfficientNet-Lite0 head-only | EfficientNet-Lite0 head-only − Baseline CNN "
            "(points, 95% CI) |") in block
    # seed-paired differences 0.40, 0.40, 0.43: sd √0.0003, half-width t(0.975, 2) · sd / √3
    assert "| 500 | 31.0% ± 1.0 | 72.0% ± 2.6 | +41.0 (+36.7 to +45.3) |" in block
    assert "Test accuracy per size (single views, as the study's; mean ± standard deviation" in block
    mirrored = report.curves_block({**curves, "config": {"test_time_flip": True}})
    assert "Test accuracy per size (each test image's probabilities averaged with its mirror image's;" in mirrored
    assert learning_curve_figure(curves).axes[0].get_ylabel() == "test accuracy"
    flipped = learning_curve_figure({**curves, "config": {"test_time_flip": True}})
    assert flipped.axes[0].get_ylabel() == "test accuracy (mirror-averaged)"
    assert [line.get_marker() for line in learning_curve_figure(curves).axes[0].get_lines()].count("D") == 0
