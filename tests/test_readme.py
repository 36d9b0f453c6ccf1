"""The committed README table and results agree, and the README documents what the code does."""

import json
from pathlib import Path

from cifar10_transfer import report
from cifar10_transfer.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_matches_committed_results():
    results = json.loads((ROOT / "results" / "results.json").read_text())
    assert report.readme_table_matches((ROOT / "README.md").read_text(), results)


def test_committed_reference_run_is_labelled():
    results = json.loads((ROOT / "results" / "results.json").read_text())
    assert "JPEG copy" in results["provenance"]["data"]
    for name in ("resnet50_head", "resnet50_finetuned"):
        assert name in results["models"] or results["not_run"][name]


def test_readme_names_the_two_commands_and_every_cli_command():
    readme = (ROOT / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in commands:
        assert f"cifar10_transfer {command}" in readme
