"""Notebooks are thin: committed without outputs, one tagged parameters cell, the papermill kernel."""

import ast
import json
import logging
from pathlib import Path

import papermill
import pytest

from cifar10_transfer.workflow import KERNEL_NAME, NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name):
    notebook = json.loads((ROOT / "notebooks" / name).read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code)
    tagged = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(tagged) == 1 and code.index(tagged[0]) == 0
    assert notebook["metadata"]["kernelspec"]["name"] == KERNEL_NAME
    # no logic of their own: no function or class definitions, no loops over data
    source = "\n".join("".join(cell["source"]) for cell in code)
    assert "def " not in source and "class " not in source and "for " not in source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_reads_every_parameter_of_the_parameters_cell(name, caplog):
    """papermill parses the parameters cell line by line and skips, with a warning, a line holding two
    `=` (a comment's example, say); reproduce would then log "Passed unknown parameter" for it."""
    notebook = json.loads((ROOT / "notebooks" / name).read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    assigned = {node.targets[0].id for node in ast.parse("".join(cell["source"])).body}
    with caplog.at_level(logging.WARNING, logger="papermill"):
        inspected = papermill.inspect_notebook(str(ROOT / "notebooks" / name))
    assert set(inspected) == assigned and not caplog.records
