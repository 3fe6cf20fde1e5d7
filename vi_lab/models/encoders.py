"""Encoders q_phi(z | x) for amortized inference: x (B, P) -> (loc, log_scale), each (B, D).

The MLP has `model.encoder_hidden` widths, by default the decoder's in reverse
(Cremer et al. 2018 use 200-200);
the conv encoder downsamples the images twice before a linear head.
"""

from __future__ import annotations

from torch import Tensor, nn

from vi_lab.config import Architecture, ModelConfig
from vi_lab.models.nets import ConvEncoderTrunk, check_image_shape, mlp


class Encoder(nn.Module):
    def __init__(self, net: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_scale = self.net(x).chunk(2, dim=-1)  # (B, D) each
        return loc, log_scale


def build_encoder(config: ModelConfig, data_dim: int, image_shape: tuple[int, ...] | None) -> Encoder:
    if config.encoder == Architecture.conv:
        check_image_shape(image_shape, "model.encoder")
        net: nn.Module = ConvEncoderTrunk(config.channels, 2 * config.latent_dim, image_shape)
    else:
        widths = config.encoder_hidden if config.encoder_hidden is not None else list(reversed(config.hidden))
        net = mlp([data_dim, *widths, 2 * config.latent_dim])
    return Encoder(net, config.latent_dim)
