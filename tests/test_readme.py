"""The committed README table and results agree, and the README documents what the code does."""

import json
import re
from pathlib import Path

import pypdf

from cifar10_transfer import report
from cifar10_transfer.cli import build_parser
from cifar10_transfer.curve_report import seed_spread
from cifar10_transfer.results import CURVES_FILE, RESULTS_FILE, load_curves

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_matches_committed_results():
    results = json.loads((ROOT / RESULTS_FILE).read_text())
    curves = load_curves(ROOT / CURVES_FILE)
    assert report.readme_table_matches((ROOT / "README.md").read_text(), results, curves)


def test_readme_curves_block_matches_committed_learning_curves():
    path = ROOT / CURVES_FILE
    readme = (ROOT / "README.md").read_text()
    if path.is_file():
        assert report.readme_curves_match(readme, json.loads(path.read_text()))
    else:  # not measured yet: the README must say so rather than show stale numbers
        assert "Not measured yet" in readme


def test_committed_reference_run_is_labelled():
    results = json.loads((ROOT / RESULTS_FILE).read_text())
    assert "JPEG copy" in results["provenance"]["data"]
    for name in ("resnet50_head", "resnet50_finetuned"):
        assert name in results["models"] or results["not_run"][name]


def test_readme_names_the_two_commands_and_every_cli_command():
    readme = (ROOT / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in commands:
        assert f"cifar10_transfer {command}" in readme


MACHINE_PATH = re.compile(r"(?<![\w.])(/tmp/|/work/|/home/|/root/|/Users/|/var/folders/|[A-Z]:\\)")


def test_committed_artifacts_hold_no_machine_paths():
    files = [ROOT / "README.md", *(ROOT / "results").rglob("*.*"), ROOT / "benchmarks" / "results" / "latest.json"]
    texts = {path: path.read_text(encoding="utf-8") for path in files
             if path.suffix in (".md", ".json", ".csv", ".ipynb")}
    deck = ROOT / "presentation" / "computer_vision_image_classification.pdf"
    texts[deck] = "\n".join(page.extract_text() for page in pypdf.PdfReader(deck).pages)
    assert len(texts) >= 5
    assert {str(path.relative_to(ROOT)): MACHINE_PATH.findall(text) for path, text in texts.items()
            if MACHINE_PATH.search(text)} == {}


def test_committed_curves_agree_with_the_main_table_within_their_seed_spread():
    results = json.loads((ROOT / RESULTS_FILE).read_text())
    curves = load_curves(ROOT / CURVES_FILE)
    assert curves is not None and "JPEG copy" in curves["provenance"]["data"]
    spread = seed_spread(curves, results["config"]["train_size"])
    for name in ("cnn", f"{curves['backbone']}_head"):
        mean, std, seeds = spread[name]
        model = results["models"][name]
        # like for like: the curves evaluated one view per image
        accuracy = model["test_time_flip"]["single_view_test_accuracy"] if "test_time_flip" in model else (
            model["test_accuracy"])
        assert seeds == 3 and abs(accuracy - mean) <= max(2 * std, 0.005), name
