"""A trained thing: one decoder and one posterior (encoder or per-datapoint table)."""

from __future__ import annotations

from torch import Tensor, nn

from vi_lab.config import Config, InferenceKind
from vi_lab.data.datasets import Data
from vi_lab.distributed import WHOLE, Shard
from vi_lab.models.decoders import build_decoder
from vi_lab.models.encoders import build_encoder
from vi_lab.models.posteriors import AmortizedPosterior, LocalPosterior


class LatentVariableModel(nn.Module):
    """Holds decoder and posterior so that one state dict and one optimizer cover both."""

    def __init__(self, decoder: nn.Module, posterior: AmortizedPosterior | LocalPosterior) -> None:
        super().__init__()
        self.decoder = decoder
        self.posterior = posterior

    def forward(self, x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """q of the minibatch (x, idx): `posterior(x, idx)`, as a forward pass, so that
        DistributedDataParallel can wrap the model (the wrapper's forward readies its gradient
        all-reduce, which covers every parameter the backward pass reaches, decoder included)."""
        return self.posterior(x, idx)

    @property
    def table_keys(self) -> list[str]:
        """State-dict keys holding one entry per training row (sharded over ranks), if any."""
        if self.posterior.amortized:
            return []
        return [f"posterior.{name}" for name in LocalPosterior.TABLE]


def build_model(config: Config, data: Data, shard: Shard = WHOLE) -> LatentVariableModel:
    """The model of `config`; a per-datapoint table holds only the rows of `shard` (all by default)."""
    decoder = build_decoder(config.model, data.data_dim, data.image_shape)
    if config.inference.kind == InferenceKind.amortized:
        posterior: AmortizedPosterior | LocalPosterior = AmortizedPosterior(
            build_encoder(config.model, data.data_dim, data.image_shape)
        )
    else:
        posterior = LocalPosterior(data.num_train, config.model.latent_dim, config.inference.inner, shard)
    return LatentVariableModel(decoder, posterior)
