"""matplotlib figures written as PNG files and as TensorBoard images.

Figures are drawn on matplotlib's Agg canvas directly (`Figure` + `FigureCanvasAgg`, no
pyplot): no display is needed and no global backend is switched under the user's feet.
One rendering serves both outputs: the canvas's pixels go to the PNG (Pillow) and to
TensorBoard's Images tab. matplotlib is imported when a figure is drawn, not with this
module, so commands that draw none (`vi-lab train`) start without it.

Sizes are chosen for reading: a figure is 4 inches wide at 300 dpi (1200 pixels), so its
10-point text (42 pixels) stays legible when TensorBoard's Images tab shrinks it to a card
about 330 pixels wide, and several panels are stacked one above the other, each the full
width, rather than squeezed side by side.
Legends go below the panels (`outside_legend`), never over the data.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 300
WIDTH = 4.0  # inches: 1200 pixels at DPI
TITLE_CHARS = 52  # characters of a 10-point title line across WIDTH
TITLE_LINE = 0.3  # inches of figure height per title line


def new_figure(title: str, num_panels: int = 1, panel_height: float = 2.4) -> Figure:
    """A figure titled `title` (say what run, split, points, estimator and family it shows),
    with `num_panels` panels stacked, each WIDTH by `panel_height` inches."""
    from matplotlib.figure import Figure

    title = wrap(title)
    height = panel_height * num_panels + TITLE_LINE * (title.count("\n") + 1)
    figure = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    figure.subplots(num_panels, 1, squeeze=False)
    figure.suptitle(title, fontsize=10)
    return figure


def wrap(title: str) -> str:
    """A title broken into lines that fit the figure's width (a long run name, say)."""
    return textwrap.fill(title, TITLE_CHARS, break_long_words=False)


def outside_legend(figure: Figure, **kwargs: object) -> None:
    """One legend for the whole figure, below its panels (matplotlib's "outside" placement
    under the constrained layout), from the labelled artists of every panel."""
    handles, labels = {}, []
    for ax in figure.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        columns = min(len(labels), 3)
        figure.legend(
            [handles[k] for k in labels], labels, loc="outside lower center", ncols=columns, **kwargs
        )


def captioned_grid(grid: Tensor, title: str, row_labels: Sequence[str] = ()) -> Figure:
    """An image grid (C, H, W) in [0, 1] (`board.image_grid`) under a title saying what it
    shows, its rows labelled on the left, each pixel drawn as a sharp square."""
    from matplotlib.figure import Figure

    channels, height, width = grid.shape
    image = grid.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy()  # (H, W, C)
    margin = 1.1 if row_labels else 0.1  # inches left of the image for its row labels
    image_width = WIDTH - margin
    title = wrap(title)
    lines = title.count("\n") + 1
    figure = Figure(
        figsize=(WIDTH, image_width * height / width + TITLE_LINE * lines), dpi=DPI, layout="constrained"
    )
    figure.suptitle(title, fontsize=10)
    ax = figure.subplots()
    ax.imshow(image[..., 0] if channels == 1 else image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(i + 0.5) * height / len(row_labels) for i in range(len(row_labels))], row_labels)
    ax.tick_params(length=0, labelsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return figure


def save_figure(
    figure: Figure, path: str | Path, writer: SummaryWriter | None = None, tag: str = "", step: int = 0
) -> Path:
    """Render `figure` to `path` (PNG) and, given a writer, to the TensorBoard image `tag` at `step`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]  # (H, W, 3) uint8
    path = Path(path)
    Image.fromarray(rgb).save(path, format="PNG", dpi=(figure.dpi, figure.dpi))
    if writer is not None:
        writer.add_image(tag, rgb, step, dataformats="HWC")
    return path
