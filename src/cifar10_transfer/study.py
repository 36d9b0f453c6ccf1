"""The study table: each stage's label, the accuracy the original study reported, its curve figure.

`plots`, `deck`, `report`, `analysis` and the tests read stages from here; no module keeps
its own copy. The study trained 10,000 images (80/20 split) at 224x224 for 10+10+10 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .registry import parse_stage, stage_names

# Test accuracies (fractions) the original study reported; other stages have none.
STUDY_ACCURACY = {"cnn": 0.605, "resnet50_head": 0.887, "resnet50_finetuned": 0.910}
STUDY_STAGES = tuple(STUDY_ACCURACY)
_KIND_LABEL = {"head": "head-only", "finetuned": "fine-tuned"}
_KIND_FIGURE = {"head": "head", "finetuned": "finetuning"}
_SCRATCH_LABEL = {"cnn": "Baseline CNN", "scratch": "ResNet from scratch (strong baseline)"}


@dataclass(frozen=True)
class Stage:
    """One row of the study table."""

    name: str  # e.g. "efficientnet_lite0_head"
    label: str  # e.g. "EfficientNet-Lite0 head-only"
    study_accuracy: float | None  # what the study reported, None for stages it did not run
    curve_file: str  # the training-curve figure, e.g. "resnet_head.png"
    backbone: str | None  # registry name, None for the stages trained from scratch


def stage(name: str) -> Stage:
    """The table entry of any stage name (UserError for an unknown one)."""
    backbone, kind = parse_stage(name)
    if backbone is None:
        return Stage(name, _SCRATCH_LABEL[kind], STUDY_ACCURACY.get(name), f"{name}_curve.png", None)
    return Stage(name, f"{backbone.label} {_KIND_LABEL[kind]}", STUDY_ACCURACY.get(name),
                 f"{backbone.curve_prefix}_{_KIND_FIGURE[kind]}.png", backbone.name)


def table_stages(trained: Iterable[str]) -> list[Stage]:
    """The rows a results table shows: the study's stages always, then every other stage trained,
    in run order (`registry.stage_names`)."""
    others = [name for name in stage_names() if name in set(trained) and name not in STUDY_STAGES]
    return [stage(name) for name in (*STUDY_STAGES, *others)]


def label(name: str) -> str:
    """The display label of a stage, e.g. 'ResNet50 fine-tuned'."""
    return stage(name).label
