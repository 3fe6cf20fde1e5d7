"""Where the uses of a trained run write: RUN/uses/ on disk and `uses/...` tags in TensorBoard.

The commands `gradvar`, `sample`, `anomaly`, `impute` and `embed` (the uses of a density
model of p(x): generation, outlier scores, imputation, representation) all load a run with
`load_run`, write files into RUN/uses/ and log into the run's own TensorBoard folder at the
run's last training step, through this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from vi_lab.runs.board import write_png
from vi_lab.runs.figures import captioned_grid, save_figure
from vi_lab.runs.folder import TrainedRun

FOLDER = "uses"


@dataclass
class Outputs:
    folder: Path  # RUN/uses
    writer: SummaryWriter  # the run's TensorBoard folder
    step: int  # the run's last training step

    def image(self, name: str, grid: Tensor, caption: str, row_labels: Sequence[str] = ()) -> Path:
        """Save a (C, H, W) grid captioned (`figures.captioned_grid`) as RUN/uses/{name}.png and
        the TensorBoard image `uses/{name}`, and its exact pixels as RUN/uses/{name}_pixels.png."""
        write_png(grid, self.folder / f"{name}_pixels.png")
        figure = captioned_grid(grid, caption, row_labels)
        return save_figure(figure, self.folder / f"{name}.png", self.writer, f"{FOLDER}/{name}", self.step)

    def scalar(self, tag: str, value: float) -> None:
        self.writer.add_scalar(f"{FOLDER}/{tag}", value, self.step)

    def histogram(self, tag: str, values: Tensor) -> None:
        self.writer.add_histogram(f"{FOLDER}/{tag}", values, self.step)


@contextmanager
def open_outputs(run: TrainedRun) -> Iterator[Outputs]:
    folder = run.run_dir / FOLDER
    folder.mkdir(exist_ok=True)
    with SummaryWriter(str(run.run_dir)) as writer:
        yield Outputs(folder, writer, run.step)


def require_images(run: TrainedRun, command: str) -> tuple[int, int, int]:
    """The run's image shape, or a ValueError naming the command for synthetic (non-image) data."""
    if run.data.image_shape is None:
        raise ValueError(
            f"`{command}` needs image data, but {run.run_dir} holds {run.config.data.name.value} data"
        )
    return run.data.image_shape
