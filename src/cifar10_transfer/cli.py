"""Command line: `python -m cifar10_transfer {data check,train,reproduce,report,predict}`.

Argument parsing and exit codes only; the work is in `workflow`. A UserError prints
one line and exits 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from .config import PROFILES
from .errors import UserError


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=("cifar10", "synthetic"), default="cifar10",
                        help="cifar10 (local copy or Keras download) or synthetic stand-in images")
    parser.add_argument("--data-dir", help="local CIFAR-10: official tarball, batches or image folders "
                                           "(default: $CIFAR10_DIR, else the Keras download)")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    _add_data_flags(parser)
    parser.add_argument("--profile", choices=tuple(PROFILES), default="seed",
                        help="seed: the study's settings; smoke: minutes on a CPU; full: all 50,000 images")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, type-checked (repeatable)")
    parser.add_argument("--weights", default="imagenet",
                        help="backbone weights: imagenet (each backbone's own source), none (random init) "
                             "or a file (Keras .weights.h5/.h5; EfficientNet-Lite0 also its .pth checkpoint)")
    parser.add_argument("--out", default=".", help="publish results, figures and deck under this directory")
    parser.add_argument("--resume", action="store_true", help="continue the latest interrupted run in --out")
    parser.add_argument("--strict", action="store_true",
                        help="refuse to start when a selected backbone's ImageNet weights cannot be had "
                             "(default: run the other stages and name the missing ones)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="python -m cifar10_transfer",
                                     description="CIFAR-10: baseline CNN versus ImageNet transfer learning.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="data commands")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="load the data and print per-split, per-class counts")
    _add_data_flags(check)
    _add_run_flags(commands.add_parser("train", help="train and evaluate, write OUT/results/results.json"))
    reproduce = commands.add_parser("reproduce", help="run the notebooks, figures, results, deck, README")
    _add_run_flags(reproduce)
    reproduce.add_argument("--curves-from", metavar="JSON",
                           help="keep these learning curves (a learning_curves.json, e.g. results/learning_"
                                "curves.json) instead of running notebook 03; they keep their own run's labels")
    report = commands.add_parser("report",
                                 help="re-render the results figures, deck and README table from results.json")
    report.add_argument("--out", default=".", help="directory holding results/results.json")
    predict = commands.add_parser("predict", help="classify images with a trained model of a run")
    predict.add_argument("--run", default=".", help="the --out of a train or reproduce run")
    predict.add_argument("--model", help="a trained stage, e.g. cnn or efficientnet_lite0_finetuned "
                                         "(default: the run's best model)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of them")
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute parsed arguments; returns the exit code."""
    from . import workflow

    if args.command == "data":
        print(workflow.data_summary(args.data, args.data_dir))
    elif args.command in ("train", "reproduce"):
        overrides, missing = workflow.without_unobtainable(args.profile, args.overrides, args.weights, args.strict)
        _say_not_run(missing)
        arguments = (args.profile, overrides, args.data, args.data_dir, args.weights, args.out, args.resume)
        if args.command == "train":
            print(f"results: {workflow.train(*arguments)}")
        else:
            print("\n".join(f"published: {p}" for p in workflow.reproduce(
                *arguments, curves_from=args.curves_from, quiet=not args.debug)))
        _say_not_run(missing)  # the last word: what is missing, and how to get it
    elif args.command == "report":
        print(f"deck: {workflow.report(args.out)}")
    elif args.command == "predict":
        return _predict(args)
    return 0


def _say_not_run(missing: list[str]) -> None:
    for reason in missing:
        print(f"not run: {reason}", flush=True)


def _predict(args: argparse.Namespace) -> int:
    from .predict import format_json, format_table, predict_images

    stage, predictions = predict_images(args.run, args.images, args.model)
    print(format_json(stage, predictions) if args.json else format_table(stage, predictions))
    failed = [p for p in predictions if p.error]
    for p in failed:
        print(f"error: {p.error}", file=sys.stderr)
    return 2 if failed else 0


def _needs_tensorflow(args: argparse.Namespace) -> bool:
    """Whether the command imports TensorFlow: `report` never does, `data check` only to
    download, `reproduce` (whose notebooks run in their own kernels) only to check a weights
    file. The others import it first, muted, before any of their output."""
    if args.command == "report":
        return False
    if args.command == "reproduce":
        return args.weights not in ("imagenet", "none")
    if args.command == "data":
        return args.data == "cifar10" and not (args.data_dir or os.environ.get("CIFAR10_DIR"))
    return True


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and list its devices with file descriptor 2 muted, so that its C++ notices
    do not bury the one-line errors; `--debug` skips this and shows them all. An import error still
    surfaces: stderr is restored before Python raises it."""
    from .workflow import stderr_to

    with stderr_to(os.devnull):
        import tensorflow

        tensorflow.config.list_physical_devices()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m cifar10_transfer`."""
    args = build_parser().parse_args(argv)
    if not args.debug:
        # TensorFlow's C++ log lines (the cuInit error on machines without a GPU, the cost model's
        # warnings while training) would bury what the commands print, here and in the notebook
        # kernels, which inherit the environment; errors that matter surface as Python exceptions.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        if args.command in ("train", "reproduce"):
            from . import workflow

            workflow.preflight(args.profile, args.overrides, args.weights, args.out,  # before TensorFlow loads
                               getattr(args, "curves_from", None))
        if not args.debug and _needs_tensorflow(args):
            _import_tensorflow_quietly()
        return run(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with the same command and --resume.", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk can strike any write (checkpoints, models, figures)
        if args.debug or not (exc.errno == errno.ENOSPC or "No space left" in str(exc)):
            raise
        where = f" for {exc.filename}" if exc.filename else ""
        print(f"error: no space left on device{where}; free space or choose another --out, then rerun "
              "with --resume (the published results are unchanged).", file=sys.stderr)
        return 2
