"""The latent representation of a run in TensorBoard's embedding projector (the posterior
mean as a learned representation; Kingma & Welling 2014).

Each point is placed at its posterior mean (`posterior.infer`: the encoder's, or a fresh
per-datapoint fit), labelled with its Fashion-MNIST class and shown by its image. The
projector's files (TensorBoard's projector plugin format: tensors.tsv, metadata.tsv, a
sprite of the images in a square grid without borders) go into RUN/uses/embedding/, beside
the other uses' outputs, and RUN/projector_config.pbtxt points to them, under the tensor
name `uses/embedding:{step}`; `embed_run` also saves RUN/uses/embedding.npz (loc, labels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import text_format
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch import Tensor

from vi_lab.chunking import map_points
from vi_lab.config import ConfigError, override
from vi_lab.runs.board import write_png
from vi_lab.runs.folder import load_run
from vi_lab.runs.outputs import FOLDER, open_outputs

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
TAG = f"{FOLDER}/embedding"


@dataclass
class EmbedConfig:
    """Settings of `vi-lab embed`; override as `vi-lab embed RUN key=value`."""

    split: str = "test"
    num_points: int = 1000
    batch_size: int = 500  # points inferred together

    def check(self) -> None:
        if self.split not in ("train", "valid", "test"):
            raise ConfigError("split: must be train, valid or test")
        for key in ("num_points", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be positive")


def embed_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Write the posterior means of a split's first points to the run's embedding projector."""
    config = override(EmbedConfig(), overrides)
    run = load_run(run_dir)
    x = run.data.x[config.split][: config.num_points]
    labels = run.data.labels[config.split]
    with torch.no_grad():
        family = run.model.family
        loc = map_points(
            lambda x: family.center(run.model.posterior.infer(run.model.decoder, x)),
            x,
            size=config.batch_size,
        )  # (N, D)
    metadata = None if labels is None else [CLASS_NAMES[int(c)] for c in labels[: x.shape[0]]]
    images = None if run.data.image_shape is None else x.view(-1, *run.data.image_shape).cpu()
    with open_outputs(run) as out:
        config_file = write_projector(run.run_dir, loc.cpu(), metadata, images, out.step)
        arrays = {"loc": loc.cpu().numpy()}
        if labels is not None:
            arrays["labels"] = labels[: x.shape[0]].cpu().numpy()
        np.savez(out.folder / "embedding.npz", **arrays)
    return {
        "num_points": x.shape[0],
        "latent_dim": loc.shape[1],
        "split": config.split,
        "projector_config": str(config_file),
        "npz": str(run.run_dir / FOLDER / "embedding.npz"),
    }


def write_projector(
    run_dir: Path, loc: Tensor, labels: list[str] | None, images: Tensor | None, step: int
) -> Path:
    """The projector's files for `loc` (N, D) in RUN/uses/embedding/ (replacing a previous
    embedding's), with `labels` and `images` (N, C, H, W) where given; returns the config."""
    folder = run_dir / FOLDER / "embedding"
    folder.mkdir(parents=True, exist_ok=True)
    config = ProjectorConfig()
    embedding = config.embeddings.add(
        tensor_name=f"{TAG}:{step:05d}", tensor_path=_relative(folder, "tensors.tsv")
    )
    np.savetxt(folder / "tensors.tsv", loc.numpy(), delimiter="\t", fmt="%.7g")
    if labels is not None:
        (folder / "metadata.tsv").write_text("".join(f"{label}\n" for label in labels))
        embedding.metadata_path = _relative(folder, "metadata.tsv")
    if images is not None:
        write_png(sprite(images), folder / "sprite.png")
        embedding.sprite.image_path = _relative(folder, "sprite.png")
        embedding.sprite.single_image_dim.extend([images.shape[3], images.shape[2]])  # width, height
    config_file = run_dir / "projector_config.pbtxt"
    config_file.write_text(text_format.MessageToString(config))
    return config_file


def sprite(images: Tensor) -> Tensor:
    """(N, C, H, W) -> (C, n H, n W), n = ceil(sqrt(N)): the images row by row, no borders, the
    rest black (the layout the projector expects of a sprite)."""
    num, channels, height, width = images.shape
    side = math.ceil(math.sqrt(num))
    padded = torch.zeros(side * side, channels, height, width)
    padded[:num] = images
    grid = padded.view(side, side, channels, height, width).permute(2, 0, 3, 1, 4)  # (C, n, H, n, W)
    return grid.reshape(channels, side * height, side * width)


def _relative(folder: Path, name: str) -> str:
    """A path inside RUN/uses/embedding/ as the projector reads it: relative to RUN."""
    return f"{FOLDER}/{folder.name}/{name}"
