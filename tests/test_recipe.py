"""The stage-2 recipe: resolved once from the registry and the config, validated once, read back from results."""

from dataclasses import replace

import pytest

from cifar10_transfer.config import make_config
from cifar10_transfer.errors import UserError
from cifar10_transfer.recipe import Stage2Recipe, describe, resolve, training_sizes, validate
from cifar10_transfer.registry import BACKBONES

LITE0 = BACKBONES["efficientnet_lite0"]


def test_config_overrides_replace_only_the_fields_they_set():
    default = LITE0.stage2
    assert make_config("seed").recipe("efficientnet_lite0") == default
    tuned = make_config("seed", ["finetune_lr=1e-4", "finetune_layers=72"]).recipe("efficientnet_lite0")
    assert tuned == Stage2Recipe(72, 1e-4, default.schedule, default.label_smoothing, default.batchnorm,
                                 default.drop_path, default.views, default.image_size)
    assert resolve(default, {"finetune_lr": None}) == default  # None means: the backbone's default


def test_a_recorded_recipe_reads_back_from_new_and_old_results_alike():
    recipe = Stage2Recipe(140, 3e-4, "cosine", label_smoothing=0.1, drop_path=0.2)
    flat = {"finetune_layers": 140, "finetune_lr": 3e-4, "finetune_views": 0, "finetune_schedule": "cosine",
            "finetune_label_smoothing": 0.1, "finetune_batchnorm": "frozen", "finetune_drop_path": 0.2}
    assert Stage2Recipe.from_entry({"stage2": recipe.to_dict()}) == recipe == Stage2Recipe.from_entry(flat)
    # results from before schedules and smoothing were recorded ran the study's plateau rule without them
    assert Stage2Recipe.from_entry({"finetune_layers": 30, "finetune_lr": 1e-5}) == Stage2Recipe(30, 1e-5)


def test_describe_says_depth_rate_schedule_clauses_and_how_images_were_seen():
    words = describe(LITE0.stage2, LITE0)
    assert words == ("all 140 layers after the input at learning rate 0.0003, cosine decay to near 0, "
                     "label smoothing 0.1, stochastic depth 0.2; online: the whole backbone every step")
    resnet = BACKBONES["resnet50"]
    assert describe(resnet.stage2, resnet) == ("last 30 layers at learning rate 1e-05, halved when validation loss "
                                               "stalls; frozen prefix cached, 2 augmented copies per image")


@pytest.mark.parametrize("recipe, message", [
    (Stage2Recipe(0, 1e-3), "finetune_layers=0 must be positive"),
    (Stage2Recipe(10, 0.0), "finetune_lr=0.0 must be positive"),
    (Stage2Recipe(142, 1e-3), "larger than the 141 layers of the EfficientNet-Lite0 backbone"),
    (Stage2Recipe(10, 1e-3, views=-1), "must be 0 \\(online\\) or more"),
    (Stage2Recipe(10, 1e-3, schedule="step"), "finetune_schedule='step' is unknown"),
    (Stage2Recipe(10, 1e-3, batchnorm="adapt"), "finetune_batchnorm='adapt' is unknown"),
    (Stage2Recipe(10, 1e-3, label_smoothing=1.0), "must lie in \\[0, 1\\)"),
    (Stage2Recipe(140, 1e-3, views=2), "unfreezes all of it; set finetune_views=0"),
])
def test_validate_names_the_config_key_and_the_fix(recipe, message):
    with pytest.raises(UserError, match=message):
        validate(recipe, LITE0)


def test_prefix_and_stochastic_depth_checks_apply_only_to_a_stage_that_fine_tunes():
    resnet = BACKBONES["resnet50"]
    assert validate(Stage2Recipe(30, 1e-5, drop_path=0.2), resnet, fine_tuned=False)
    with pytest.raises(UserError, match="needs stochastic-depth blocks, which ResNet50 lacks"):
        validate(Stage2Recipe(30, 1e-5, drop_path=0.2), resnet)


def test_training_sizes_hold_one_side_or_rise_by_epoch_in_steps_of_32_to_the_high_side():
    assert training_sizes(None, 224, 3) == [224, 224, 224]  # None: the evaluation size
    assert training_sizes(128, 224, 2) == [128, 128]
    assert training_sizes("128-224", 224, 10) == [128, 128, 160, 160, 160, 192, 192, 192, 224, 224]
    assert training_sizes("96-224", 224, 5) == [96, 128, 160, 192, 224]
    assert training_sizes("32-64", 64, 2) == [32, 64]


@pytest.mark.parametrize("size, message", [
    (16, "must be a side of at least 32 px"),
    ("224-128", "LOW-HIGH \\(e.g. 128-224\\) with 32 <= LOW < HIGH"),
    ("big", "'big' must be a side"),
    (256, "exceeds image_size=224, the evaluation size"),
    ("128-256", "exceeds image_size=224"),
])
def test_a_training_size_is_a_side_or_a_rise_within_the_evaluation_size(size, message):
    with pytest.raises(UserError, match=message):
        make_config("seed", {"models": "efficientnet_lite0_finetuned", "finetune_image_size": size})


def test_a_training_size_other_than_the_evaluation_size_needs_an_online_stage_two():
    with pytest.raises(UserError, match="leaves a frozen prefix that is cached at image_size=224; set "
                                        "finetune_image_size=224"):
        make_config("seed", ["models=resnet50_finetuned", "finetune_image_size=128"])
    # the evaluation size itself is today's stage 2, prefix or not
    assert make_config("seed", ["models=resnet50_finetuned", "finetune_image_size=224"]).recipe("resnet50").image_size \
        == 224


def test_a_default_training_size_above_a_small_runs_image_size_gives_way_to_it(monkeypatch):
    monkeypatch.setitem(BACKBONES, "efficientnet_lite0", replace(LITE0, stage2=replace(LITE0.stage2, image_size=128)))
    assert make_config("seed").recipe("efficientnet_lite0").image_size == 128
    assert make_config("smoke").recipe("efficientnet_lite0").image_size is None  # 64 px: trained at 64
    with pytest.raises(UserError, match="exceeds image_size=64"):  # said outright, it is refused
        make_config("smoke", ["models=efficientnet_lite0_finetuned", "finetune_image_size=128"])


def test_describe_names_the_training_size_where_it_is_not_the_evaluation_size():
    assert describe(replace(LITE0.stage2, image_size=128), LITE0).endswith(
        "stochastic depth 0.2, trained at 128 px; online: the whole backbone every step")
    assert ", trained at 128 px rising to 224 px;" in describe(replace(LITE0.stage2, image_size="128-224"), LITE0)
