"""matplotlib figures written as PNG files and as TensorBoard images.

Figures are drawn on matplotlib's Agg canvas directly (`Figure` + `FigureCanvasAgg`, no
pyplot): no display is needed and no global backend is switched under the user's feet.
One rendering serves both outputs: the canvas's pixels go to the PNG (Pillow) and to
TensorBoard's Images tab.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

DPI = 100


def new_figure(num_panels: int = 1, panel_size: tuple[float, float] = (4.0, 3.0)) -> Figure:
    """A figure of `num_panels` side by side, each `panel_size` inches (400 x 300 pixels)."""
    width, height = panel_size
    figure = Figure(figsize=(width * num_panels, height), dpi=DPI, layout="constrained")
    figure.subplots(1, num_panels, squeeze=False)
    return figure


def save_figure(
    figure: Figure, path: str | Path, writer: SummaryWriter | None = None, tag: str = "", step: int = 0
) -> Path:
    """Render `figure` to `path` (PNG) and, given a writer, to the TensorBoard image `tag` at `step`."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]  # (H, W, 3) uint8
    path = Path(path)
    Image.fromarray(rgb).save(path, format="PNG")
    if writer is not None:
        writer.add_image(tag, rgb, step, dataformats="HWC")
    return path
