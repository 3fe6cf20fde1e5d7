"""A trained thing: one decoder and one posterior (encoder or per-datapoint table)."""

from __future__ import annotations

from torch import Tensor, nn

from vi_lab.config import Config, InferenceKind
from vi_lab.data.datasets import Data
from vi_lab.distributed import WHOLE, Shard
from vi_lab.models.decoders import build_decoder
from vi_lab.models.encoders import build_encoder
from vi_lab.models.posteriors import AmortizedPosterior, LocalPosterior, SemiAmortizedPosterior

Posterior = AmortizedPosterior | LocalPosterior | SemiAmortizedPosterior


class LatentVariableModel(nn.Module):
    """Holds decoder and posterior so that one state dict and one optimizer cover both."""

    def __init__(self, decoder: nn.Module, posterior: Posterior) -> None:
        super().__init__()
        self.decoder = decoder
        self.posterior = posterior

    def forward(self, x: Tensor, idx: Tensor, beta: float = 1.0, num_samples: int = 1) -> dict[str, Tensor]:
        """The training step's per-example terms on the minibatch (x, idx):
        `posterior.training_terms`, as a forward pass, so that DistributedDataParallel can wrap
        the model (its forward readies the all-reduce of the gradients)."""
        return self.posterior.training_terms(self.decoder, x, idx, beta, num_samples)

    @property
    def table_keys(self) -> list[str]:
        """State-dict keys holding one entry per training row (sharded over ranks), if any."""
        return [f"posterior.{name}" for name in self.posterior.TABLE]


def build_model(config: Config, data: Data, shard: Shard = WHOLE) -> LatentVariableModel:
    """The model of `config`; a per-datapoint table holds only the rows of `shard` (all by default)."""
    decoder = build_decoder(config.model, data.data_dim, data.image_shape)
    kind = config.inference.kind
    if kind == InferenceKind.local:
        posterior: Posterior = LocalPosterior(
            data.num_train,
            config.model.latent_dim,
            config.inference.inner,
            shard,
            compiled=config.runtime.compile,
        )
    else:  # an encoder, built after the decoder: same seed, same weights in both encoder modes
        encoder = build_encoder(config.model, data.data_dim, data.image_shape)
        posterior = (
            AmortizedPosterior(encoder)
            if kind == InferenceKind.amortized
            else SemiAmortizedPosterior(encoder, config.inference.refine)
        )
    return LatentVariableModel(decoder, posterior)
