"""A trained thing: one decoder and one posterior (encoder or per-datapoint table)."""

from __future__ import annotations

from torch import nn

from vi_lab.config import Config, InferenceKind
from vi_lab.data.datasets import Data
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


def build_model(config: Config, data: Data) -> LatentVariableModel:
    decoder = build_decoder(config.model, data.data_dim, data.image_shape)
    kind = config.inference.kind
    if kind == InferenceKind.local:
        posterior: Posterior = LocalPosterior(
            data.num_train, config.model.latent_dim, config.inference.inner, compiled=config.runtime.compile
        )
    else:  # an encoder, built after the decoder: same seed, same weights in both encoder modes
        encoder = build_encoder(config.model, data.data_dim, data.image_shape)
        posterior = (
            AmortizedPosterior(encoder)
            if kind == InferenceKind.amortized
            else SemiAmortizedPosterior(encoder, config.inference.refine)
        )
    return LatentVariableModel(decoder, posterior)
