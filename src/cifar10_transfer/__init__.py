"""cifar10-transfer: a baseline CNN versus ImageNet transfer learning (ResNet50 and other backbones) on CIFAR-10.

The public API is flat; names load on first use so that `python -m cifar10_transfer --help`
does not pay for importing TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": "config", "make_config": "config", "PROFILES": "config",
    "Dataset": "data", "load_dataset": "data", "synthetic_dataset": "data", "safe_extract": "data",
    "Splits": "pipelines", "split_dataset": "pipelines", "cnn_dataset": "pipelines",
    "transfer_dataset": "pipelines", "augment_batch": "pipelines",
    "build_model": "models", "build_cnn": "models", "build_transfer": "models", "build_resnet50": "models",
    "unfreeze": "models", "save_backbone_weights": "models", "TransferModel": "models",
    "StochasticDepth": "custom_layers", "Stage2Recipe": "recipe",
    "BACKBONES": "registry", "Backbone": "registry", "get_backbone": "registry",
    "stage": "study", "STUDY_ACCURACY": "study",
    "Run": "stages", "ModelRun": "stages", "run_stage": "stages", "run_all": "runs",
    "evaluate_predictions": "evaluation", "resolve_precision": "execution", "make_strategy": "execution",
    "UserError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cifar10_transfer' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
