"""matplotlib figures written as PNG files and as TensorBoard images.

Figures are drawn on matplotlib's Agg canvas directly (`Figure` + `FigureCanvasAgg`, no
pyplot): no display is needed and no global backend is switched under the user's feet.
One rendering serves both outputs: the canvas's pixels go to the PNG (Pillow) and to
TensorBoard's Images tab. matplotlib is imported when a figure is drawn, not with this
module, so commands that draw none (`vi-lab train`) start without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


def new_figure(num_panels: int = 1, panel_size: tuple[float, float] = (4.0, 3.0)) -> Figure:
    """A figure of `num_panels` side by side, each `panel_size` inches (400 x 300 pixels)."""
    from matplotlib.figure import Figure

    width, height = panel_size
    figure = Figure(figsize=(width * num_panels, height), dpi=DPI, layout="constrained")
    figure.subplots(1, num_panels, squeeze=False)
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
    Image.fromarray(rgb).save(path, format="PNG")
    if writer is not None:
        writer.add_image(tag, rgb, step, dataformats="HWC")
    return path
