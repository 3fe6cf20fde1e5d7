"""Encoders q_phi(z | x) for amortized inference: x (B, P) -> (loc, log_scale), each (B, D).

The MLP has `model.encoder_hidden` widths, by default the decoder's in reverse
(Cremer et al. 2018 use 200-200);
the conv encoder downsamples 28x28 images twice before a linear head.
"""

from __future__ import annotations

from torch import Tensor, nn

from vi_lab.config import Architecture, ModelConfig
from vi_lab.decoders import mlp


class Encoder(nn.Module):
    def __init__(self, net: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_scale = self.net(x).chunk(2, dim=-1)  # (B, D) each
        return loc, log_scale


class ConvTrunk(nn.Sequential):
    """(B, 784) -> (B, 2D): unflatten to 28x28, two stride-2 convolutions, a linear head."""

    def __init__(self, channels: list[int], latent_dim: int) -> None:
        narrow, wide = channels[0], channels[-1]
        super().__init__(
            nn.Unflatten(1, (1, 28, 28)),
            nn.Conv2d(1, narrow, 4, stride=2, padding=1),  # 28 -> 14
            nn.ELU(),
            nn.Conv2d(narrow, wide, 4, stride=2, padding=1),  # 14 -> 7
            nn.ELU(),
            nn.Flatten(),
            nn.Linear(wide * 7 * 7, 2 * latent_dim),
        )


def build_encoder(config: ModelConfig, data_dim: int, image_shape: tuple[int, ...] | None) -> Encoder:
    if config.encoder == Architecture.conv:
        if image_shape != (1, 28, 28):
            raise ValueError(
                f"model.encoder=conv needs 28x28 single-channel images, the data has shape {image_shape}; "
                "use model.encoder=mlp"
            )
        net: nn.Module = ConvTrunk(config.channels, config.latent_dim)
    else:
        widths = config.encoder_hidden if config.encoder_hidden is not None else list(reversed(config.hidden))
        net = mlp([data_dim, *widths, 2 * config.latent_dim])
    return Encoder(net, config.latent_dim)
