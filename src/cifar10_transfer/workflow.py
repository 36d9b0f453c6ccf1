"""The commands behind the CLI and `make`: check data, train, reproduce, report.

Each takes plain arguments and returns what it produced; `cli` only parses arguments
and turns UserError into a message and an exit code.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from .config import make_config
from .data import load_dataset
from .errors import UserError
from .publish import MODELS_DIR, RunLock, publish, start_run, write_atomic
from .registry import get_backbone, parse_stage
from .results import CURVES_FILE, HISTORIES_DIR, RESULTS_FILE, load_curves, load_published
from .weights import check_weights_available, check_weights_file

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("01_gathering_eda.ipynb", "02_preprocessing_modeling_evaluation.ipynb", "03_learning_curves.ipynb")
KERNEL_NAME = "cifar10-transfer"  # registered by `make install`
KERNEL_LOG = "kernels.log"  # in the run directory: what the notebook kernels (and papermill) print to stderr
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


def preflight(profile: str, overrides: list[str] | None, weights: str, out: str | Path,
              curves_from: str | None = None) -> None:
    """The checks of `train` and `reproduce` that need no TensorFlow, so that a bad setting, a
    missing weights or curves file or an unusable output directory fails in a fraction of a second
    (the CLI runs them before it imports TensorFlow). UserError on the first that fails."""
    make_config(profile, overrides)
    check_weights_file(weights)
    _kept_curves(curves_from)
    with RunLock(Path(out)):  # writable and not in use by another run; released at once
        pass


def without_unobtainable(profile: str, overrides: list[str] | None, weights: str,
                         strict: bool = False) -> tuple[list[str], list[str]]:
    """The overrides, with `models` narrowed to the stages whose ImageNet weights can be had here,
    and one reason (with its fix) per backbone left out. Offline, the study's ResNet50 cannot be
    fetched, and the rest of the study should still run; `strict` refuses instead (UserError),
    as does a run that would have nothing left."""
    overrides, config = list(overrides or []), make_config(profile, overrides)
    if strict or weights != "imagenet":
        return overrides, []
    missing = {}
    for name in config.backbones:
        try:
            check_weights_available(get_backbone(name), weights)
        except UserError as exc:
            missing[name] = f"{get_backbone(name).label}: {exc}"
    kept = [stage for stage in config.model_list if getattr(parse_stage(stage)[0], "name", None) not in missing]
    if missing and not kept:
        raise UserError(next(iter(missing.values())))
    return ([*overrides, f"models={','.join(kept)}"] if missing else overrides), list(missing.values())


def check_run_weights(config, weights: str) -> None:
    """Refuse, before any work, weights that a selected backbone cannot load (UserError):
    without TensorFlow for `imagenet` (installed, cached or downloadable), and by loading
    a weights file, whose contents must fit the backbone."""
    for name in config.backbones:
        check_weights_available(get_backbone(name), weights)
        if weights not in ("imagenet", "none"):
            from .models import check_weights

            check_weights(name, weights)


def train(profile: str = "seed", overrides: list[str] | None = None, source: str = "cifar10",
          data_dir: str | None = None, weights: str = "imagenet", out: str | Path = ".",
          resume: bool = False) -> Path:
    """Train the selected models, evaluate them and publish OUT/results/results.json."""
    out = Path(out)
    config = make_config(profile, overrides)  # bad settings fail here, before TensorFlow is imported
    with RunLock(out):
        from .cache import FeatureCache
        from .runs import run_all
        from .stages import Run
        from .execution import make_strategy

        strategy = make_strategy(config.strategy)  # before any other TensorFlow work (multi-worker needs it)
        arguments = _arguments(profile, overrides, source, data_dir, weights)
        dataset = load_dataset(source, arguments["data_dir"], config.seed)
        run_dir = start_run(out, arguments, resume)
        run = Run(config, dataset, weights, run_dir, profile, strategy, FeatureCache.beside(run_dir))
        run.splits  # noqa: B018 -- a size the data cannot fill fails before weights are fetched
        check_run_weights(config, weights)
        run_all(run)
        publish(run_dir, out, [RESULTS_FILE, HISTORIES_DIR, MODELS_DIR])
    return out / RESULTS_FILE


@contextmanager
def stderr_to(path: str | Path):
    """File descriptor 2, so also that of every child process started meanwhile, appended to `path`.

    TensorFlow prints CUDA and oneDNN notices from C++ before its logging is set up, and Jupyter
    kernels warn about their transport, so neither TF_CPP_MIN_LOG_LEVEL nor Python can silence them.
    """
    saved = os.dup(2)
    try:
        with open(path, "a") as target:
            os.dup2(target.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _execute_notebook(name: str, run_dir: Path, parameters: dict, quiet: bool = True) -> None:
    """Execute notebook `name` into the run directory, echoing what its cells print to stdout (the
    stages' progress). With `quiet`, its kernel's own stderr goes to the run directory's kernels.log."""
    import papermill
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import DeadKernelError

    source = REPO_ROOT / "notebooks" / name
    if not source.is_file():
        raise UserError(f"{source} is missing; run reproduce from a clone of the repository.")
    target = run_dir / "results" / "notebooks" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with stderr_to(run_dir / KERNEL_LOG) if quiet else nullcontext():
            # ipykernel copies what C++ writes to file descriptor 2 (TensorFlow's oneDNN and CUDA notices)
            # into the cell's outputs; off, it reaches the kernel's stderr: kernels.log, or with --debug the terminal.
            papermill.execute_notebook(str(source), str(target), parameters=parameters, kernel_name=KERNEL_NAME,
                                       cwd=str(run_dir), progress_bar=False, stdout_file=sys.stdout,
                                       extra_arguments=["--IPKernelApp.capture_fd_output=False"])
    except NoSuchKernel as exc:
        raise UserError(f"Jupyter kernel {KERNEL_NAME!r} is not installed; run `make install`.") from exc
    except papermill.PapermillExecutionError as exc:
        raise UserError(f"{name} failed: {exc.ename}: {exc.evalue.splitlines()[0] if exc.evalue else ''} "
                        f"(executed copy: {target}; kernel log: {run_dir / KERNEL_LOG}).") from exc
    except DeadKernelError as exc:  # killed, or out of memory: the stages finished so far are kept
        raise UserError(f"{name}: its kernel died (killed, or out of memory); free memory if need be and rerun "
                        "the same command with --resume.") from exc
    _relative_papermill_paths(target, name)


def _relative_papermill_paths(path: Path, name: str) -> None:
    """Papermill records absolute input and output paths; published copies name them from the repo root."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["papermill"].update(input_path=f"notebooks/{name}", output_path=f"results/notebooks/{name}")
    write_atomic(path, nbformat.writes(notebook))


def _weights_argument(weights: str) -> str:
    # The notebooks run with the run directory as their working directory.
    return weights if weights in ("imagenet", "none") else str(Path(weights).resolve())


def reproduce(profile: str = "seed", overrides: list[str] | None = None, source: str = "cifar10",
              data_dir: str | None = None, weights: str = "imagenet", out: str | Path = ".",
              resume: bool = False, curves_from: str | Path | None = None, quiet: bool = True) -> list[Path]:
    """Run the three notebooks, render the deck and README blocks, then publish everything at once.
    The notebooks' printed progress shows as they run; `quiet` keeps their kernels' notices out.

    `curves_from` (a learning_curves.json) is kept instead of running notebook 03, whose curves take
    hours at the seed profile on a CPU; they stay labelled with their own run's commit and settings."""
    from .deck import render_deck
    from .report import update_readme

    out = Path(out)
    check_run_weights(make_config(profile, overrides), weights)  # refuse bad settings before any work
    kept_curves = _kept_curves(curves_from)
    with RunLock(out):
        arguments = _arguments(profile, overrides, source, data_dir, weights)
        run_dir = start_run(out, arguments, resume)
        if arguments["data_dir"]:
            # The kernels read the data directory from the environment, so that no absolute
            # path of this machine lands in the executed notebooks' parameter cells.
            os.environ["CIFAR10_DIR"] = arguments["data_dir"]
        common = {"data": source, "data_dir": None, "out_dir": "."}
        _execute_notebook(NOTEBOOKS[0], run_dir, {**common, "profile": profile}, quiet)
        for notebook in NOTEBOOKS[1:] if kept_curves is None else NOTEBOOKS[1:-1]:
            _execute_notebook(notebook, run_dir, {**common, "profile": profile, "overrides": arguments["overrides"],
                                                  "weights": _weights_argument(weights)}, quiet)
        if kept_curves is not None:
            keep_curves(Path(curves_from), kept_curves, run_dir)
        results, curves, eda = load_published(run_dir)
        render_deck(results, run_dir / "images", run_dir / "presentation" / DECK_NAME, curves, eda)
        published = publish(run_dir, out, ["results", "images", "presentation", MODELS_DIR])
        if (out / "README.md").is_file():
            update_readme(out / "README.md", results, curves)
    return published


def _kept_curves(curves_from: str | Path | None) -> dict | None:
    """The curves of --curves-from, read before any work; UserError where there are none to read."""
    curves = load_curves(curves_from) if curves_from else None
    if curves_from and curves is None:
        raise UserError(f"--curves-from {curves_from} is not a file; pass a learning_curves.json such as "
                        "results/learning_curves.json, or leave it out to run notebook 03.")
    return curves


def keep_curves(source: Path, curves: dict, run_dir: Path) -> None:
    """Put the learning curves of `source` into `run_dir` as notebook 03 would have: the file, its
    figures and, where it lies beside them, its executed notebook (results/notebooks/)."""
    from .analysis import save_curve_figures

    target = run_dir / CURVES_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    executed = source.parent / "notebooks" / NOTEBOOKS[-1]
    if executed.is_file():
        (run_dir / "results" / "notebooks").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(executed, run_dir / "results" / "notebooks" / NOTEBOOKS[-1])
    save_curve_figures(curves, run_dir / "images")


def report(out: str | Path = ".") -> Path:
    """Re-render the figures drawn from results alone, the deck and the README table from
    OUT/results/results.json, without training."""
    from .deck import render_deck
    from .figures import save_results_figures
    from .report import update_readme

    out = Path(out)
    results, curves, eda = load_published(out)
    deck = out / "presentation" / DECK_NAME
    save_results_figures(results, out / "images")
    render_deck(results, out / "images", deck, curves, eda)
    if (out / "README.md").is_file():
        update_readme(out / "README.md", results, curves)
    return deck
