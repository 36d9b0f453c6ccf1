"""The commands behind the CLI and `make`: check data, train, reproduce, report.

Each takes plain arguments and returns what it produced; `cli` only parses arguments
and turns UserError into a message and an exit code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .config import make_config
from .data import load_dataset
from .errors import UserError
from .publish import RunLock, publish, start_run

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("01_gathering_eda.ipynb", "02_preprocessing_modeling_evaluation.ipynb")
KERNEL_NAME = "cifar10-transfer"  # registered by `make install`
DECK_NAME = "computer_vision_image_classification.pdf"


def data_summary(source: str = "cifar10", data_dir: str | None = None, seed: int = 3) -> str:
    """Load the data and describe it: source, then per-split, per-class counts."""
    dataset = load_dataset(source, data_dir, seed)
    train = np.bincount(dataset.y_train, minlength=len(dataset.class_names))
    test = np.bincount(dataset.y_test, minlength=len(dataset.class_names))
    width = max(len(name) for name in dataset.class_names)
    lines = [f"source: {dataset.description}", f"{'class':<{width}}  {'train':>6}  {'test':>6}"]
    lines += [f"{name:<{width}}  {a:>6}  {b:>6}" for name, a, b in zip(dataset.class_names, train, test)]
    lines.append(f"{'total':<{width}}  {train.sum():>6}  {test.sum():>6}")
    return "\n".join(lines)


def _arguments(profile, overrides, source, data_dir, weights) -> dict:
    return {"profile": profile, "overrides": list(overrides or []), "data": source,
            "data_dir": str(Path(data_dir).resolve()) if data_dir else os.environ.get("CIFAR10_DIR") or None,
            "weights": weights}


def train(profile: str = "seed", overrides: list[str] | None = None, source: str = "cifar10",
          data_dir: str | None = None, weights: str = "imagenet", out: str | Path = ".",
          resume: bool = False) -> Path:
    """Train the selected models, evaluate them and publish OUT/results/results.json."""
    from .experiment import Experiment

    out = Path(out)
    config = make_config(profile, overrides)
    with RunLock(out):
        arguments = _arguments(profile, overrides, source, data_dir, weights)
        dataset = load_dataset(source, arguments["data_dir"], config.seed)
        run_dir = start_run(out, arguments, resume)
        experiment = Experiment(config, dataset, weights, run_dir, profile)
        experiment.save_results(experiment.run_all())
        publish(run_dir, out, ["results/results.json", "results/histories"])
    return out / "results" / "results.json"


def _execute_notebook(name: str, run_dir: Path, parameters: dict) -> None:
    import papermill
    from jupyter_client.kernelspec import NoSuchKernel

    source = REPO_ROOT / "notebooks" / name
    if not source.is_file():
        raise UserError(f"{source} is missing; run reproduce from a clone of the repository.")
    target = run_dir / "results" / "notebooks" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(source), str(target), parameters=parameters,
                                   kernel_name=KERNEL_NAME, cwd=str(run_dir), progress_bar=False)
    except NoSuchKernel as exc:
        raise UserError(f"Jupyter kernel {KERNEL_NAME!r} is not installed; run `make install`.") from exc
    except papermill.PapermillExecutionError as exc:
        raise UserError(f"{name} failed: {exc.ename}: {exc.evalue.splitlines()[0] if exc.evalue else ''} "
                        f"(executed copy: {target}).") from exc


def reproduce(profile: str = "seed", overrides: list[str] | None = None, source: str = "cifar10",
              data_dir: str | None = None, weights: str = "imagenet", out: str | Path = ".",
              resume: bool = False) -> list[Path]:
    """Run both notebooks, render the deck and README table, then publish everything at once."""
    from .models import check_weights
    from .deck import render_deck
    from .report import load_results, update_readme

    out = Path(out)
    config = make_config(profile, overrides)  # refuse a bad configuration or weights before any work
    if any(name.startswith("resnet50") for name in config.model_list):
        check_weights(weights)
    with RunLock(out):
        arguments = _arguments(profile, overrides, source, data_dir, weights)
        run_dir = start_run(out, arguments, resume)
        common = {"data": source, "data_dir": arguments["data_dir"], "out_dir": str(run_dir.resolve())}
        _execute_notebook(NOTEBOOKS[0], run_dir, {**common, "profile": profile})
        _execute_notebook(NOTEBOOKS[1], run_dir, {**common, "profile": profile,
                                                  "overrides": arguments["overrides"], "weights": weights})
        results = load_results(run_dir / "results" / "results.json")
        render_deck(results, run_dir / "images", run_dir / "presentation" / DECK_NAME)
        published = publish(run_dir, out, ["results", "images", "presentation"])
        if (out / "README.md").is_file():
            update_readme(out / "README.md", results)
    return published


def report(out: str | Path = ".") -> Path:
    """Re-render the deck and the README table from OUT/results/results.json, without training."""
    from .deck import render_deck
    from .report import load_results, update_readme

    out = Path(out)
    results = load_results(out / "results" / "results.json")
    deck = out / "presentation" / DECK_NAME
    render_deck(results, out / "images", deck)
    if (out / "README.md").is_file():
        update_readme(out / "README.md", results)
    return deck
