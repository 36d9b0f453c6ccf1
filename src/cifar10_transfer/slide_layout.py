"""The deck's slide layout: the slide frame, text that wraps and shrinks to fit, and where figures sit."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.image as mpimg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .figures import FIGURES
from .plots import PALETTE

SLIDE_W, SLIDE_H = 13.333, 7.5  # 16:9 in inches
# DejaVu Sans averages about 0.55 em per character (used to wrap text to a width); lines are 1.35 em apart.
CHAR_EM, LINE = 0.55, 1.35
BODY = (0.05, 0.08, 0.95, 0.84)  # left, bottom, right, top of the content area (figure fraction)
# Where each figure sits: [left, bottom, width, height] as slide fractions. Every figure is drawn at
# most this size in inches (tests hold it), so its 9-10 pt text is never shrunk on the slide.
PLACED = {"train_label_distribution": [0.04, 0.12, 0.5, 0.7], "dataset_samples": [0.56, 0.09, 0.4, 0.75],
          "avg_rgb_by_class": [0.03, 0.2, 0.42, 0.6], "pixel_intensity": [0.46, 0.12, 0.52, 0.72],
          "augmentation": [0.04, 0.08, 0.45, 0.76], "model_comparison": [0.15, 0.07, 0.7, 0.47],
          "accuracy_vs_cost": [0.12, 0.09, 0.76, 0.75], "confusion_matrix": [0.03, 0.09, 0.46, 0.75],
          "common_errors": [0.51, 0.2, 0.46, 0.55], "misclassified_examples": [0.05, 0.09, 0.9, 0.75],
          "learning_curve": [0.03, 0.1, 0.55, 0.74], "resolution_cost": [0.03, 0.1, 0.55, 0.74]}
CURVES_PER_SLIDE, CURVE_GRID = 4, (0.03, 0.06, 0.94, 0.78)  # training curves: 2 x 2 in this box at most


def flow(fig: Figure, entries: list, box=BODY, size: int = 20) -> None:
    # Draw (prefix, prefix_x, text, text_x) entries top-down in `box`, wrapping the text and
    # shrinking the font until everything fits, so nothing is ever cut off at the slide's bottom.
    left, bottom, right, top = box
    width_in = (right - left) * SLIDE_W
    for fs in range(size, 9, -1):
        layout = [(prefix, px, textwrap.wrap(text, max(int((width_in - tx) * 72 / (CHAR_EM * fs)), 12)) or [""], tx)
                  for prefix, px, text, tx in entries]
        height = sum(len(lines) * LINE + 0.5 for *_, lines, _ in layout) * fs / 72 / SLIDE_H
        if height <= top - bottom:
            break
    y, step = top, LINE * fs / 72 / SLIDE_H
    for prefix, px, lines, tx in layout:
        fig.text(left + px / SLIDE_W, y, prefix, fontsize=fs, va="top", weight="bold", color=PALETTE["primary"])
        for line in lines:
            fig.text(left + tx / SLIDE_W, y, line, fontsize=fs, va="top")
            y -= step
        y -= 0.5 * fs / 72 / SLIDE_H


def bullets(fig: Figure, items: list, box=BODY, size: int = 20) -> None:
    flow(fig, [("•", 0.0, item, 0.35) for item in items], box, size)


def picture(fig: Figure, path: Path, rect: list) -> None:
    """Embed a PNG in `rect` (left, bottom, width, height), or say in text that it is missing."""
    ax = fig.add_axes(rect, frame_on=False, xticks=[], yticks=[])
    if path.is_file():
        # interpolation="none" embeds the original pixels instead of resampling at PDF dpi.
        ax.imshow(mpimg.imread(path), interpolation="none")
    else:
        ax.text(0.5, 0.5, f"{path.name}:\nfigure not produced in this run", ha="center", va="center",
                fontsize=16, color=PALETTE["muted"], transform=ax.transAxes)


def frame(title: str, number: int, total: int, takeaway: str | None) -> Figure:
    fig = Figure(figsize=(SLIDE_W, SLIDE_H))
    fig.text(0.05, 0.915, title, fontsize=28, weight="bold", va="center")
    fig.add_artist(Line2D([0.05, 0.95], [0.865, 0.865], color=PALETTE["primary"], linewidth=2))
    fig.text(0.95, 0.03, f"{number} / {total}", fontsize=11, color=PALETTE["muted"], ha="right")
    if takeaway:
        # one line under the body, shrunk to fit left of the page number, wrapped only below 11 pt;
        # bold DejaVu Sans runs about 0.63 em per character
        width_pt, em = 0.83 * SLIDE_W * 72, 0.63
        size = max(11, min(15, int(width_pt / (em * len(takeaway)))))
        text = textwrap.fill(takeaway, int(width_pt / (em * size)))
        fig.text(0.05, 0.045, text, fontsize=size, weight="bold", color=PALETTE["primary"], va="center",
                 linespacing=1.2)
    return fig


def pictures(*names):
    """A slide of figures from the table, each where PLACED puts it."""
    return lambda fig, images, **_: [picture(fig, images / FIGURES[name].file, PLACED[name]) for name in names]


def curve_cell(count: int) -> list:
    """The [width, height] (slide fractions) of each training-curve figure on a slide of `count`."""
    left, bottom, width, height = CURVE_GRID
    columns = 1 if count == 1 else 2
    return [width / columns * 0.98, height / -(-count // columns) * 0.98]
