import json

import pytest

from cifar10_transfer.config import MODEL_NAMES, PROFILES, RunConfig, make_config, parse_overrides
from cifar10_transfer.errors import UserError
from cifar10_transfer.recipe import ScratchRecipe


def test_seed_profile_is_the_study():
    config = make_config("seed")
    assert (config.train_size, config.val_fraction, config.test_size, config.seed) == (10_000, 0.2, None, 3)
    assert (config.image_size, config.batch_size) == (224, 64)
    assert (config.cnn_epochs, config.head_epochs, config.finetune_epochs) == (10, 10, 10)
    assert config.scratch_epochs == 40 and config.scratch_recipe() == ScratchRecipe()
    # stage 2 depth and rate come from each backbone's registry entry (ResNet50: the study's 30 and 1e-5)
    assert (config.finetune_layers, config.head_lr, config.finetune_lr) == (None, 1e-3, None)
    # the study's three stages, beside the ResNet from scratch and EfficientNet-Lite0's two
    assert config.model_list == ["cnn", "scratch", "resnet50_head", "resnet50_finetuned", "efficientnet_lite0_head",
                                 "efficientnet_lite0_finetuned"]


def test_profiles_differ_where_documented():
    full = make_config("full")
    assert full.train_size == 50_000 and full.scratch_epochs == 12  # five times the images, within 3 times the time
    smoke = make_config("smoke")
    assert smoke.train_size < 1000 and smoke.image_size < 224
    assert (smoke.cnn_epochs, smoke.head_epochs, smoke.finetune_epochs, smoke.scratch_epochs) == (1, 1, 1, 1)
    assert set(PROFILES) == {"seed", "smoke", "full"}


def test_overrides_are_typed():
    config = make_config("seed", ["train_size=2000", "head_lr=0.01", "augment=false", "head_mode=end_to_end",
                                  "test_size=all", "finetune_lr=1", "finetune_layers=12"])
    assert config.train_size == 2000 and config.head_lr == 0.01 and config.augment is False
    assert config.head_mode == "end_to_end" and config.test_size is None
    assert isinstance(config.finetune_lr, float) and config.finetune_lr == 1.0 and config.finetune_layers == 12
    assert make_config("seed", ["finetune_layers=default", "finetune_lr=none"]).finetune_lr is None


@pytest.mark.parametrize("pair, message", [
    ("batch_sise=3", "unknown key"),
    ("train_size=abc", "expected int"),
    ("train_size=1.5", "expected int"),
    ("augment=3", "expected bool"),
    ("cnn_epochs=0", "must be positive"),
    ("batch_size=-4", "must be positive"),
    ("val_fraction=1.0", "strictly between 0 and 1"),
    ("val_fraction=0", "strictly between 0 and 1"),
    ("finetune_layers=500", "larger than the 175 layers of the ResNet50 backbone"),
    ("finetune_layers=0", "must be positive"),
    ("finetune_layers=174", "caches the frozen prefix of ResNet50, but finetune_layers=174 unfreezes all of it"),
    ("finetune_lr=-1", "must be positive"),
    ("finetune_schedule=step", "unknown"),
    ("finetune_label_smoothing=1", r"must lie in \[0, 1\)"),
    ("finetune_batchnorm=adapt", "unknown; choose from frozen, train"),
    ("finetune_drop_path=1.0", r"must lie in \[0, 1\)"),
    ("finetune_drop_path=0.2", "needs stochastic-depth blocks, which ResNet50 lacks; set finetune_drop_path=0"),
    ("scratch_epochs=0", "scratch_epochs=0 must be positive"),
    ("scratch_width=0", "scratch_width=0 must be positive"),
    ("scratch_width=8.5", "expected int or none"),
    ("scratch_lr=-0.1", "scratch_lr=-0.1 must be positive"),
    ("scratch_weight_decay=-1e-3", "scratch_weight_decay=-0.001 must be 0 or more"),
    ("scratch_label_smoothing=1", r"scratch_label_smoothing=1.0 must lie in \[0, 1\)"),
    ("models=cnn,resnet_scratch", "unknown"),  # the stage is `scratch`; resnet_scratch names its builder
    ("models=efficientnet_lite0_head,cnn,vit", "unknown"),
    ("models=cnn,vit", "unknown"),
    ("precision=float8", "unknown"),
    ("head_mode=sometimes", "unknown"),
    ("noequals", "not key=value"),
])
def test_bad_overrides_are_refused_with_a_reason(pair, message):
    with pytest.raises(UserError, match=message):
        make_config("seed", [pair])


def test_unknown_profile():
    with pytest.raises(UserError, match="unknown profile"):
        make_config("huge")


def test_scratch_keys_replace_only_the_recipe_fields_they_set():
    config = make_config("seed", ["scratch_width=32", "scratch_lr=0.1", "scratch_label_smoothing=0"])
    assert config.scratch_recipe() == ScratchRecipe(width=32, learning_rate=0.1, label_smoothing=0.0)
    assert config.scratch_recipe().peak_rate(128) == pytest.approx(0.2)  # in proportion to the batch size


def test_finetuned_implies_head_and_order_is_fixed():
    assert make_config("seed", ["models=resnet50_finetuned,cnn"]).model_list == [
        "cnn", "resnet50_head", "resnet50_finetuned"]
    assert make_config("seed", ["models=resnet50_head"]).model_list == ["resnet50_head"]
    several = make_config("seed", ["models=efficientnet_lite0_finetuned,cnn,resnet50_head"])
    assert several.model_list == ["cnn", "resnet50_head", "efficientnet_lite0_head", "efficientnet_lite0_finetuned"]
    assert several.backbones == ["resnet50", "efficientnet_lite0"]
    scratch = make_config("seed", ["models=efficientnet_lite0_head,scratch,cnn"])
    assert scratch.model_list == ["cnn", "scratch", "efficientnet_lite0_head"]
    assert scratch.backbones == ["efficientnet_lite0"]


def test_stage_names_come_from_the_registry():
    from cifar10_transfer.registry import BACKBONES

    assert MODEL_NAMES == ("cnn", "scratch", *(f"{b}_{k}" for b in BACKBONES for k in ("head", "finetuned")))
    assert make_config("seed", ["models=efficientnet_lite0_head", "finetune_layers=141"]).finetune_layers == 141
    with pytest.raises(UserError, match="larger than the 141 layers of the EfficientNet-Lite0 backbone"):
        make_config("seed", ["models=efficientnet_lite0_head", "finetune_layers=142"])
    # its stage 2 is online (no cached views), so it may unfreeze everything after the input
    assert make_config("seed", ["models=efficientnet_lite0_finetuned", "finetune_layers=140"]).finetune_layers == 140


def test_config_round_trips_through_json():
    config = make_config("smoke", ["seed=7"])
    assert RunConfig(**json.loads(json.dumps(config.to_dict()))) == config


def test_parse_overrides_empty():
    assert parse_overrides(None) == {}


def test_seeds_are_a_comma_separated_setting_of_two_or_more_distinct_seeds():
    assert make_config("seed").seed_list == [3] and make_config("seed", ["seed=7"]).seed_list == [7]
    assert make_config("seed", ["seeds=5,3,4"]).seed_list == [5, 3, 4]
    assert make_config("seed", {"seeds": " 3, 4 "}).seed_list == [3, 4]
    for seeds, message in (("3,x", "comma-separated whole numbers"), ("3,3", "distinct seeds of 0 or more"),
                           ("-1,2", "distinct seeds of 0 or more"), ("4,", "comma-separated whole numbers")):
        with pytest.raises(UserError, match=message):
            make_config("seed", {"seeds": seeds})
    with pytest.raises(UserError, match="names one seed; set seed=5 instead"):
        make_config("seed", {"seeds": "5"})
    with pytest.raises(UserError, match="expected str"):
        make_config("seed", ["seeds=5"])  # one seed parses as a number, not the list this key holds


def test_long_stages_train_at_the_first_long_stage_seeds_and_short_ones_at_every_seed():
    config = make_config("seed", ["seeds=5,3,4,6", "long_stage_seeds=2"])
    assert [config.stage_seeds(name) for name in ("cnn", "efficientnet_lite0_head")] == [[5, 3, 4, 6]] * 2
    assert [config.stage_seeds(name) for name in ("scratch", "resnet50_finetuned")] == [[5, 3]] * 2
    assert make_config("seed", ["seeds=3,4"]).stage_seeds("scratch") == [3, 4]
    assert make_config("seed").stage_seeds("scratch") == [3]
    for overrides in (["long_stage_seeds=2"], ["seeds=3,4", "long_stage_seeds=3"], ["seeds=3,4", "long_stage_seeds=1"]):
        with pytest.raises(UserError, match="long_stage_seeds=.* must lie between 2 and the number of seeds"):
            make_config("seed", overrides)


def test_curve_models_name_kinds_of_the_curve_backbone_and_refuse_others():
    config = make_config("smoke")
    assert config.curve_stage_list == ["cnn", "scratch", "efficientnet_lite0_head", "efficientnet_lite0_finetuned"]
    chosen = make_config("smoke", ["curve_models=finetuned,cnn", "curve_backbone=resnet50"])
    assert chosen.curve_stage_list == ["cnn", "resnet50_finetuned"]
    with pytest.raises(UserError, match="curve_models='resnet50_head' is unknown; choose from cnn, scratch, head"):
        make_config("smoke", ["curve_models=resnet50_head"])
    with pytest.raises(UserError, match="curve_models is empty"):
        make_config("smoke", ["curve_models=,"])
    assert make_config("smoke", ["curve_finetune_max_size=none"]).curve_finetune_max_size is None
    with pytest.raises(UserError, match="curve_finetune_max_size=0 must be positive"):
        make_config("smoke", ["curve_finetune_max_size=0"])


def test_curve_sizes_above_the_single_seed_limit_take_one_seed():
    config = make_config("seed", ["seed=3"])
    assert [config.curve_seed_list(size) for size in (500, 10_000, 20_000)] == [[3, 4, 5], [3, 4, 5], [3]]
    every = make_config("seed", ["curve_single_seed_above=none", "curve_seeds=2"])
    assert every.curve_seed_list(50_000) == [3, 4]
    with pytest.raises(UserError, match="curve_single_seed_above=0 must be positive"):
        make_config("seed", ["curve_single_seed_above=0"])
