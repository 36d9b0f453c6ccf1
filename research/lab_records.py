"""What the lab's rule scripts share: the mean and standard error over seeds, and writing a decision's JSON
file and its block of research/README.md."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean, stdev

from cifar10_transfer.publish import write_atomic
from cifar10_transfer.report import replace_marked_blocks

README = Path(__file__).resolve().parent / "README.md"


def record(document: dict, out: Path, markers: tuple[str, str], block: str) -> None:
    """Write `document` to `out` (JSON) and `block` between `markers` in research/README.md."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(document, indent=2) + "\n")
    replace_marked_blocks(README, README.read_text(encoding="utf-8"), [(*markers, block)])


def mean_and_standard_error(values) -> tuple[float | None, float | None]:
    """The mean of `values` (one per seed) and its standard error sd/sqrt(n); None where there are too few."""
    values = list(values)
    mean = fmean(values) if values else None
    return mean, (stdev(values) / len(values) ** 0.5 if len(values) > 1 else None)
