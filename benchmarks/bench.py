"""Speed and memory benchmark of cifar10-transfer on the machine it runs on.

Every target is a ratio of two measurements taken in this one run, on this machine:
  - CNN training images/s and test accuracy, float32 against mixed_bfloat16 (and XLA on/off);
  - for each backbone (--backbones): feature extraction images/s, float32 against
    mixed_bfloat16 (median of timings taken in alternation), and the cosine similarity of
    their features on the same images; stage 1 (head only) wall-clock, head_mode=cached
    against end_to_end at equal epochs, and the seconds a later run takes to check the
    digests of the cached features, as a share of the cached stage 1; stage 2
    (fine-tuning) images/s at the backbone's default depth (or --finetune-layers);
  - for each backbone (stage2): the seed profile's wall-clock three ways (the study's,
    the previous default, stage 2 on the cached frozen prefix with K = 1, 2, 3 views, where
    the depth leaves a frozen prefix), projected from per-image costs measured in this run
    (benchmarks/stage_costs.py);
  - peak resident memory of a real `train` run (seed profile, ResNet50 stages of one epoch:
    memory does not depend on the number of epochs) at two training-set sizes;
  - (sizes) EfficientNet-Lite0's online stage 2 side by side: trained at the evaluation size and
    at a smaller training size (--finetune-size), images/s and the seed profile's stage 2
    projected (benchmarks/stage2_sizes.py);
  - (accuracy) EfficientNet-Lite0's fine-tuned test accuracy at the seed profile, online
    and (where the depth leaves a frozen prefix) with two cached views.

It writes benchmarks/results/latest.json and the README's Performance block. With
--weights auto, a backbone uses ImageNet weights where they are on this machine (the
EfficientNet-Lite0 pip package) and random init otherwise; each row says which. Timings do
not depend on the weights, but accuracies from random init say nothing about transfer learning.

Usage: python benchmarks/bench.py [--data cifar10|synthetic] [--data-dir DIR] [--backbones a,b] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cifar10_transfer.backbones import preprocess_for  # noqa: E402
from cifar10_transfer.cache import FeatureCache  # noqa: E402
from cifar10_transfer.config import make_config  # noqa: E402
from cifar10_transfer.data import load_dataset  # noqa: E402
from cifar10_transfer.errors import UserError  # noqa: E402
from cifar10_transfer.models import build_transfer, compile_classifier, unfreeze  # noqa: E402
from cifar10_transfer.pipelines import array_dataset, split_dataset, transfer_dataset  # noqa: E402
from cifar10_transfer.provenance import device, hardware  # noqa: E402
from cifar10_transfer.publish import write_atomic  # noqa: E402
from cifar10_transfer.recipe import Stage2Recipe, depth_words, has_frozen_prefix  # noqa: E402
from cifar10_transfer.registry import BACKBONES, get_backbone  # noqa: E402
from cifar10_transfer.report import replace_marked_blocks  # noqa: E402
from cifar10_transfer.stages import Run, train_cnn  # noqa: E402
from cifar10_transfer.execution import precision_policy, resolve_precision  # noqa: E402
from cifar10_transfer.training import fit_stage  # noqa: E402
from cifar10_transfer.weights import imagenet_status  # noqa: E402
from cifar10_transfer.workflow import train  # noqa: E402
from stage2_sizes import compared_size, side_by_side, side_by_side_markdown  # noqa: E402
from stage_costs import (ACCURACY_BACKBONE, accuracy, accuracy_markdown, per_image_costs, project,  # noqa: E402
                         projection_markdown)

ROOT = Path(__file__).resolve().parents[1]
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"


@functools.cache  # several CNN variants of one probe process read the same data
def _dataset(data: str, data_dir: str | None):
    return load_dataset(data, data_dir, seed=3)


def _data_flags(data: str, data_dir: str | None) -> list[str]:
    """The command-line flags that hand the same data to a probe process."""
    return ["--data", data, *(["--data-dir", data_dir] if data_dir else [])]


CNN_VARIANTS = {  # label: overrides of the seed profile
    "float32": ["precision=float32", "jit_compile=off"],
    "mixed_bfloat16": ["precision=mixed_bfloat16", "jit_compile=off"],
    "float32_nondeterministic": ["precision=float32", "jit_compile=off", "deterministic=false"],
    "float32_xla": ["precision=float32", "jit_compile=on", "deterministic=false"],
}


def cnn_probe(label: str, epochs: int, train_size: int, data: str, data_dir: str | None) -> dict:
    """One CNN variant at the study's settings: test accuracy and steady-state images/s."""
    config = make_config("seed", ["models=cnn", f"cnn_epochs={epochs}", f"train_size={train_size}",
                                  *CNN_VARIANTS[label]])
    with tempfile.TemporaryDirectory(prefix="bench-cnn-") as tmp:
        record = Run(config, _dataset(data, data_dir), "none", tmp, "seed")
        run = train_cnn(record)
    # the first epoch includes tracing; throughput is measured on the others
    steady = run.stage.history["epoch_seconds"][1:] or run.stage.history["epoch_seconds"]
    return {"test_accuracy": run.metrics["test_accuracy"],
            "images_per_second": len(record.splits.y_train) / float(np.mean(steady))}


def cnn_variants(epochs: int, train_size: int, data_flags: list[str]) -> dict:
    """Every CNN variant, in one fresh process per op-determinism setting (process-wide in
    TensorFlow: it cannot be turned off again), the variants of a process one after another."""
    groups: dict[bool, list[str]] = {}
    for label, overrides in CNN_VARIANTS.items():
        groups.setdefault("deterministic=false" not in overrides, []).append(label)
    out = {}
    for labels in groups.values():
        out.update(json.loads(_probe("--cnn-probe", ",".join(labels), "--cnn-epochs", str(epochs),
                                     "--cnn-train-size", str(train_size), *data_flags)))
    return {label: out[label] for label in CNN_VARIANTS}


def _probe(*args: str) -> str:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def _images(spec, x, y, image_size, **options):
    return transfer_dataset(x, y, image_size, 32, preprocess_for(spec.name), **options)


def feature_extraction(spec, images: np.ndarray, image_size: int, weights: str, rounds: int = 3) -> dict:
    """A backbone's pooled features of the same images in float32 and mixed_bfloat16.

    The two policies are timed in alternation, `rounds` times each, and the median kept,
    so that a slow moment of the machine does not decide the ratio.
    """
    labels = np.zeros(len(images), dtype=np.int64)
    data = _images(spec, images, labels, image_size)
    models, features, speeds = {}, {}, {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        with precision_policy(policy):
            models[policy] = build_transfer(spec.name, image_size, weights).features
        models[policy].predict(data.take(1), verbose=0)  # traces the predict function
    for _ in range(rounds):
        for policy, model in models.items():
            start = time.perf_counter()
            features[policy] = model.predict(data, verbose=0).astype(np.float64)
            speeds.setdefault(policy, []).append(len(images) / (time.perf_counter() - start))
    out = {policy: {"images_per_second": float(np.median(values)), "rounds": values}
           for policy, values in speeds.items()}
    a, b = features["float32"], features["mixed_bfloat16"]
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    out["speedup_bfloat16"] = out["mixed_bfloat16"]["images_per_second"] / out["float32"]["images_per_second"]
    out["cosine_similarity"] = {"mean": float(cosine.mean()), "min": float(cosine.min())}
    return out


def stage1(spec, dataset, splits, image_size: int, epochs: int, weights: str, workdir: Path) -> dict:
    """Head-only stage at equal epochs and the precision `auto` picks: cached features against
    a backbone pass every step."""
    out = {}
    for mode in ("cached", "end_to_end"):
        keras.utils.set_random_seed(0)
        with precision_policy(resolve_precision("auto", spec)):
            transfer = build_transfer(spec.name, image_size, weights)
        val = _images(spec, splits.x_val, splits.y_val, image_size)
        start = time.perf_counter()
        if mode == "cached":
            cache = FeatureCache(workdir / mode / "cache")  # the run's own mechanism, empty at first
            x_train, x_val = (cache.pooled(transfer, dataset, "train", index, image_size, 32)
                              for index in (splits.train_index, splits.val_index))
            compile_classifier(transfer.head, 1e-3, False)
            stage = fit_stage(transfer.head, array_dataset(x_train, splits.y_train, 32, True, 3),
                              array_dataset(x_val, splits.y_val, 32), epochs, workdir / mode / "stage",
                              len(splits.y_train), verbose=0)
            seconds = time.perf_counter() - start
            verify = _verification(cache.root, cache.key(transfer, dataset, "train", image_size),
                                   np.concatenate([splits.train_index, splits.val_index]))
        else:
            train = _images(spec, splits.x_train, splits.y_train, image_size, shuffle=True, seed=3)
            compile_classifier(transfer.model, 1e-3, False)
            stage = fit_stage(transfer.model, train, val, epochs, workdir / mode / "stage", len(splits.y_train),
                              verbose=0)
            seconds = time.perf_counter() - start
        out[mode] = {"seconds": seconds, "val_accuracy": stage.history["val_accuracy"][-1]}
    out["speedup_cached"] = out["end_to_end"]["seconds"] / out["cached"]["seconds"]
    out["verify_seconds"], out["verify_share"] = verify, verify / out["cached"]["seconds"]
    return out


def _verification(root: Path, key: str, rows: np.ndarray) -> float:
    """Seconds to check the digests of an entry's pooled `rows`, as a later run's cache does before
    its first read (the rows may still be in the page cache here, as they were for the stage)."""
    start = time.perf_counter()
    FeatureCache(root).verify(root / key, "pooled", rows)
    return time.perf_counter() - start


def fine_tuning(spec, splits, image_size: int, weights: str, workdir: Path, finetune_layers: int) -> dict:
    """Stage 2 throughput with the last `finetune_layers` layers unfrozen, at `auto` precision,
    augmentation on; the second epoch is timed."""
    keras.utils.set_random_seed(0)
    precision = resolve_precision("auto", spec)
    with precision_policy(precision):
        transfer = build_transfer(spec.name, image_size, weights)
    unfreeze(transfer, Stage2Recipe(finetune_layers, spec.stage2.learning_rate), False)
    train = _images(spec, splits.x_train, splits.y_train, image_size, shuffle=True, augment=True, seed=3)
    val = _images(spec, splits.x_val[:32], splits.y_val[:32], image_size)
    stage = fit_stage(transfer.model, train, val, 2, workdir / "finetune", len(splits.y_train), verbose=0)
    return {"images_per_second": len(splits.y_train) / stage.history["epoch_seconds"][-1],
            "precision": precision, "finetune_layers": finetune_layers}


def bench_weights(spec, setting: str) -> str:
    """The weights a backbone is timed with: `auto` means ImageNet where it is on this machine."""
    if setting != "auto":
        return setting
    return "imagenet" if imagenet_status(spec) in ("installed", "cached") else "none"


def _depth(spec, args) -> int:
    """Stage 2 depth of the fine-tuning, stage2 and accuracy parts: --finetune-layers, else the default."""
    return args.finetune_layers or spec.stage2.layers


def backbone_report(spec, dataset, splits, args, workdir: Path) -> dict:
    """Every per-backbone measurement."""
    weights = bench_weights(spec, args.weights)
    return {"weights": weights,
            "feature_extraction": feature_extraction(spec, splits.x_train[:args.features], args.image_size, weights),
            "stage1": stage1(spec, dataset, splits, args.image_size, args.stage1_epochs, weights, workdir / "stage1"),
            "fine_tuning": fine_tuning(spec, splits, args.image_size, weights, workdir, _depth(spec, args))}


# one epoch per stage: memory does not depend on the number of epochs
RSS_RUN = ["models=resnet50_head,resnet50_finetuned", "head_epochs=1", "finetune_epochs=1"]
# --quick checks the script runs: the same `train` call on the CNN alone (ResNet50's stages
# cost tracing seconds that say nothing there; the test suite trains them elsewhere)
QUICK_RSS_RUN = ["models=cnn", "cnn_epochs=1", "test_size=100"]


def rss_run(train_size: int, quick: bool, data: str, data_dir: str | None) -> float:
    """Peak RSS (GB) of a real `train` run: seed profile, ResNet50 stages with one epoch each."""
    overrides = [*(QUICK_RSS_RUN if quick else RSS_RUN), f"train_size={train_size}"]
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        train("seed", overrides, data, data_dir, "none", tmp)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def peak_rss(sizes: list[int], quick: bool, data_flags: list[str]) -> dict:
    """Run `rss_run` in fresh processes, one per training-set size."""
    flags = [*data_flags, *(["--quick"] if quick else [])]
    out = {str(size): float(_probe("--rss-run", str(size), *flags)) for size in sizes}
    out["growth_gb"] = out[str(max(sizes))] - out[str(min(sizes))]
    out["overrides"] = " ".join(QUICK_RSS_RUN if quick else RSS_RUN)
    return out


def _run_note(run: dict) -> str:
    took = datetime.fromisoformat(run["finished"]) - datetime.fromisoformat(run["started"])
    return f"{run['finished'][:10]}, {took.total_seconds() / 60:.0f} min, {run['hardware']} ({run['device']})"


def markdown(report: dict) -> str:
    """The README's Performance block: the rows of every part measured, and when and where each was."""
    rows, notes = [], []
    if "cnn" in report:
        c = report["cnn"]
        rows += [
            ("CNN training, float32 / mixed_bfloat16",
             f"{c['float32']['images_per_second']:,.0f} / {c['mixed_bfloat16']['images_per_second']:,.0f} images/s"),
            ("CNN training without op determinism: XLA off / on",
             f"{c['float32_nondeterministic']['images_per_second']:,.0f} / "
             f"{c['float32_xla']['images_per_second']:,.0f} images/s"),
            ("CNN test accuracy, float32 / mixed_bfloat16",
             f"{100 * c['float32']['test_accuracy']:.1f}% / {100 * c['mixed_bfloat16']['test_accuracy']:.1f}%"),
        ]
        notes.append(("CNN", c["run"]))
    for name, b in report.get("backbones", {}).items():
        f, s, t = b["feature_extraction"], b["stage1"], b["fine_tuning"]
        who = f"{get_backbone(name).label} ({'ImageNet' if b['weights'] == 'imagenet' else 'weights ' + b['weights']})"
        rows += [
            (f"{who}: features at {b['image_size']}px, float32 / mixed_bfloat16",
             f"{f['float32']['images_per_second']:.1f} / {f['mixed_bfloat16']['images_per_second']:.1f} images/s "
             f"({f['speedup_bfloat16']:.2f}x)"),
            (f"{who}: float32 vs bfloat16 feature cosine similarity (mean / min)",
             f"{f['cosine_similarity']['mean']:.6f} / {f['cosine_similarity']['min']:.6f}"),
            (f"{who}: stage 1, {b['stage1_epochs']} epochs on {b['stage1_images']} images, end_to_end / cached",
             f"{s['end_to_end']['seconds']:.0f} s / {s['cached']['seconds']:.0f} s ({s['speedup_cached']:.1f}x); "
             f"head val accuracy {100 * s['end_to_end']['val_accuracy']:.1f}% / "
             f"{100 * s['cached']['val_accuracy']:.1f}%"),
            *([(f"{who}: checking the cached features' digests (a later run), share of the cached stage 1",
                f"{s['verify_seconds']:.3f} s ({100 * s['verify_share']:.2f}%)")] if "verify_share" in s else []),
            (f"{who}: fine-tuning, {depth_words(t['finetune_layers'], get_backbone(name))}, {t['precision']}",
             f"{t['images_per_second']:.1f} images/s"),
        ]
        notes.append((get_backbone(name).label, b["run"]))
    if "peak_rss_gb" in report:
        r = report["peak_rss_gb"]
        sizes = sorted(int(k) for k in r if k.isdigit())
        rows.append((f"Peak RSS of a `train` run (seed profile, {r['overrides']}) at train_size "
                     f"{sizes[0]:,} / {sizes[-1]:,}",
                     f"{r[str(sizes[0])]:.2f} GB / {r[str(sizes[-1])]:.2f} GB (growth {r['growth_gb']:.2f} GB)"))
        notes.append(("memory", r["run"]))
    table = "\n".join(["| measurement | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])
    for name, entry in report.get("stage2", {}).items():
        spec = get_backbone(name)
        who = f"{spec.label}, {entry['precision']}, {depth_words(entry['finetune_layers'], spec)}"
        table += "\n\n" + projection_markdown(who, entry)
        notes.append((f"{spec.label} ways", entry["run"]))
    if "sizes" in report:
        table += "\n\n" + side_by_side_markdown(get_backbone(ACCURACY_BACKBONE).label, report["sizes"])
        notes.append(("stage 2 sizes", report["sizes"]["run"]))
    if "accuracy" in report:
        table += "\n\n" + accuracy_markdown(report["accuracy"])
        notes.append(("accuracy", report["accuracy"]["run"]))
    data = sorted({part["run"]["data"] for part in _parts(report)})
    jpeg_note = (", a JPEG re-encoding whose effect on accuracy is not measured here" if any("JPEG" in d for d in data)
                 else "")
    runs: dict[str, list[str]] = {}
    for part, run in notes:  # parts measured in the same run share one note
        runs.setdefault(_run_note(run), []).append(part)
    measured = "; ".join(f"{', '.join(parts)} rows in one run, {note}" for note, parts in runs.items())
    return (f"{table}\n\n*Measured: {measured}. Data: {' / '.join(data)}{jpeg_note}. Ratios compare "
            "measurements of one part, taken in one run; accuracies of random-init backbones say nothing "
            "about transfer learning.*")


def _parts(report: dict) -> list[dict]:
    return ([report[key] for key in ("cnn", "peak_rss_gb", "sizes", "accuracy") if key in report]
            + list(report.get("backbones", {}).values()) + list(report.get("stage2", {}).values()))


def update_readme(block: str) -> None:
    readme = ROOT / "README.md"
    replace_marked_blocks(readme, readme.read_text(encoding="utf-8"), [(BENCH_START, BENCH_END, block)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--stage1-train", type=int, default=250, help="images in stage 1 (80%% train, 20%% val)")
    parser.add_argument("--stage1-epochs", type=int, default=10)
    parser.add_argument("--stage2-train", type=int, default=500,
                        help="images for the per-image costs of the three ways (80%% of them are timed)")
    parser.add_argument("--features", type=int, default=96, help="images for the feature-extraction timing")
    parser.add_argument("--weights", default="auto",
                        help="auto (ImageNet where installed or cached here, else none), none, or a file")
    parser.add_argument("--backbones", default="resnet50,efficientnet_lite0",
                        help=f"comma-separated, from {', '.join(BACKBONES)}")
    parser.add_argument("--data", default="cifar10", choices=("cifar10", "synthetic"),
                        help="cifar10 (from --data-dir, CIFAR10_DIR or the Keras download) or synthetic")
    parser.add_argument("--data-dir", help="a local CIFAR-10 copy (official archive or image folders)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latest.json"))
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README block")
    parser.add_argument("--parts", default="cnn,backbones,stage2,sizes,rss,accuracy",
                        help="what to measure: cnn, backbones, stage2 (three ways, projected), sizes (stage 2 "
                             "at the evaluation size and at --finetune-size, side by side), rss, "
                             "accuracy (EfficientNet-Lite0 online vs two views, seed profile: about an hour)")
    parser.add_argument("--finetune-layers", type=int,
                        help="stage 2 depth of the fine-tuning, stage2 and accuracy parts (default: each "
                             "backbone's); cached views need one that leaves a frozen prefix")
    parser.add_argument("--finetune-size", help="the sizes part's training size: N or LOW-HIGH (default: "
                                                "EfficientNet-Lite0's, or 128 where that is the evaluation size)")
    parser.add_argument("--sizes-train", type=int, default=500,
                        help="images of the sizes part (80%% of them are timed)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other parts of --out, each labelled with its own run")
    parser.add_argument("--rss-run", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cnn-probe", help=argparse.SUPPRESS)  # comma-separated CNN_VARIANTS labels
    parser.add_argument("--cnn-epochs", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--cnn-train-size", type=int, default=10_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_run:
        print(rss_run(args.rss_run, args.quick, args.data, args.data_dir))
        return
    if args.cnn_probe:
        print(json.dumps({label: cnn_probe(label, args.cnn_epochs, args.cnn_train_size, args.data, args.data_dir)
                          for label in args.cnn_probe.split(",")}))
        return
    if args.quick:
        args.image_size, args.stage1_train, args.stage1_epochs, args.features = 32, 60, 2, 32
        args.stage2_train = args.sizes_train = 60
        args.cnn_epochs, args.cnn_train_size = 2, 300
    parts = {part.strip() for part in args.parts.split(",")}
    dataset = _dataset(args.data, args.data_dir)
    data_flags = _data_flags(args.data, args.data_dir)
    splits = split_dataset(dataset, make_config("seed", [f"train_size={args.stage1_train}"]))
    stage2_splits = split_dataset(dataset, make_config("seed", [f"train_size={args.stage2_train}"]))
    out = Path(args.out)
    report = json.loads(out.read_text()) if args.merge and out.is_file() else {}

    def measured(started: datetime) -> dict:
        return {"started": started.isoformat(timespec="seconds"),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "hardware": hardware(), "device": device(), "data": dataset.description}

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        if "cnn" in parts:
            started = datetime.now(timezone.utc)
            report["cnn"] = cnn_variants(args.cnn_epochs, args.cnn_train_size, data_flags)
            report["cnn"]["run"] = measured(started)
        for name in (n.strip() for n in args.backbones.split(",") if n.strip() and "backbones" in parts):
            started = datetime.now(timezone.utc)
            entry = backbone_report(get_backbone(name), dataset, splits, args, Path(tmp) / name)
            entry.update(image_size=args.image_size, stage1_epochs=args.stage1_epochs,
                         stage1_images=len(splits.y_train), run=measured(started))
            report.setdefault("backbones", {})[name] = entry
        for name in (n.strip() for n in args.backbones.split(",") if n.strip() and "stage2" in parts):
            started = datetime.now(timezone.utc)
            spec = get_backbone(name)
            entry = per_image_costs(spec, dataset, stage2_splits, args.image_size, bench_weights(spec, args.weights),
                                    Path(tmp) / f"stage2-{name}", _depth(spec, args))
            entry.update(projection=project(entry), image_size=args.image_size, run=measured(started))
            report.setdefault("stage2", {})[name] = entry
        if "sizes" in parts:
            started = datetime.now(timezone.utc)
            spec, size_image = get_backbone(ACCURACY_BACKBONE), 64 if args.quick else args.image_size
            sizes_splits = split_dataset(dataset, make_config("seed", [f"train_size={args.sizes_train}"]))
            report["sizes"] = side_by_side(spec, sizes_splits, size_image, bench_weights(spec, args.weights),
                                           Path(tmp) / "sizes", compared_size(spec, size_image, args.finetune_size))
            report["sizes"]["run"] = measured(started)
        if "accuracy" in parts:
            started = datetime.now(timezone.utc)
            spec = get_backbone(ACCURACY_BACKBONE)
            depth = _depth(spec, args)
            overrides = {**({"image_size": 32, "train_size": 200, "test_size": 100} if args.quick else {}),
                         "finetune_layers": depth}
            report["accuracy"] = accuracy(dataset, bench_weights(spec, args.weights), Path(tmp) / "accuracy",
                                          "smoke" if args.quick else "seed", overrides,
                                          (2, 0) if has_frozen_prefix(spec, depth) else (0,))
            report["accuracy"]["run"] = measured(started)
        if "rss" in parts:
            started = datetime.now(timezone.utc)
            report["peak_rss_gb"] = peak_rss([200, 400] if args.quick else [2000, 10_000], args.quick, data_flags)
            report["peak_rss_gb"]["run"] = measured(started)
    write_atomic(out, json.dumps(report, indent=2) + "\n")
    block = markdown(report)
    print(block)
    if not args.no_readme:
        update_readme(block)


def command_line(argv: list[str] | None = None) -> int:
    """`python benchmarks/bench.py`: an error users can act on is one line and exit status 2, like the CLI's."""
    try:
        main(argv)
    except UserError as exc:  # e.g. no CIFAR-10 reachable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(command_line())
