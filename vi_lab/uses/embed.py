"""The latent representation of a run in TensorBoard's embedding projector (the posterior
mean as a learned representation; Kingma & Welling 2014).

Each point is placed at its posterior mean (`posterior.infer`: the encoder's, or a fresh
per-datapoint fit), labelled with its Fashion-MNIST class and shown by its image
(`SummaryWriter.add_embedding`, tag `uses/embedding`). TensorBoard writes the vectors,
labels and sprite under RUN/{step:05d}/uses%2fembedding/ and lists them in
RUN/projector_config.pbtxt; `embed_run` also saves RUN/uses/embedding.npz (loc, labels).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vi_lab.chunking import map_points
from vi_lab.config import ConfigError, override
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
        # A rerun at the same step replaces the projector files instead of warning about them.
        shutil.rmtree(
            Path(out.writer.get_logdir()) / f"{out.step:05d}" / "uses%2fembedding", ignore_errors=True
        )
        out.writer.add_embedding(
            loc.cpu(), metadata=metadata, label_img=images, global_step=out.step, tag=TAG
        )
        arrays = {"loc": loc.cpu().numpy()}
        if labels is not None:
            arrays["labels"] = labels[: x.shape[0]].cpu().numpy()
        np.savez(out.folder / "embedding.npz", **arrays)
        folder = Path(out.writer.get_logdir())
    return {
        "num_points": x.shape[0],
        "latent_dim": loc.shape[1],
        "split": config.split,
        "projector_config": str(folder / "projector_config.pbtxt"),
        "npz": str(run.run_dir / FOLDER / "embedding.npz"),
    }
