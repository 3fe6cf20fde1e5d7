"""matplotlib figures written as PNG files and as TensorBoard images.

Figures are drawn on matplotlib's Agg canvas directly (`Figure` + `FigureCanvasAgg`, no
pyplot): no display is needed and no global backend is switched under the user's feet.
One rendering serves both outputs: the canvas's pixels go to the PNG (Pillow) and to
TensorBoard's Images tab. matplotlib is imported when a figure is drawn, not with this
module, so commands that draw none (`vi-lab train`) start without it.

Sizes are chosen for reading: a figure is 6 inches wide at 200 dpi (1200 pixels), so its
10-point text stays legible when TensorBoard shrinks it to a card, and several panels are
stacked one above the other, each the full width, rather than squeezed side by side.
Legends go below the panels (`outside_legend`), never over the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 200
WIDTH = 6.0  # inches: 1200 pixels at DPI


def new_figure(title: str, num_panels: int = 1, panel_height: float = 2.8) -> Figure:
    """A figure titled `title` (say what run, split, points, estimator and family it shows),
    with `num_panels` panels stacked, each WIDTH by `panel_height` inches."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH, panel_height * num_panels + 0.4), dpi=DPI, layout="constrained")
    figure.subplots(num_panels, 1, squeeze=False)
    figure.suptitle(title, fontsize=10)
    return figure


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
