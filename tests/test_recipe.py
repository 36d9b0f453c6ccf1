"""The stage-2 recipe: resolved once from the registry and the config, validated once, read back from results."""

import pytest

from cifar10_transfer.config import make_config
from cifar10_transfer.errors import UserError
from cifar10_transfer.recipe import Stage2Recipe, describe, resolve, validate
from cifar10_transfer.registry import BACKBONES

LITE0 = BACKBONES["efficientnet_lite0"]


def test_config_overrides_replace_only_the_fields_they_set():
    default = LITE0.stage2
    assert make_config("seed").recipe("efficientnet_lite0") == default
    tuned = make_config("seed", ["finetune_lr=1e-4", "finetune_layers=72"]).recipe("efficientnet_lite0")
    assert tuned == Stage2Recipe(72, 1e-4, default.schedule, default.label_smoothing, default.batchnorm,
                                 default.drop_path, default.views)
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
