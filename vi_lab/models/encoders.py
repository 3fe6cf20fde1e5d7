"""Encoders q_phi(z | x) for amortized inference: x (B, P) -> params (B, num_params) of q in
a variational family (`vi_lab.inference.families`): the same head for every family.

The MLP has `model.encoder_hidden` widths, by default the decoder's in reverse
(Cremer et al. 2018 use 200-200);
the conv encoder downsamples the images twice before a linear head.
"""

from __future__ import annotations

from torch import Tensor, nn

from vi_lab.config import Architecture, ModelConfig
from vi_lab.models.nets import ConvEncoderTrunk, check_image_shape, mlp


class Encoder(nn.Module):
    """x (B, data_dim) -> params (B, num_params)."""

    def __init__(self, net: nn.Module, num_params: int) -> None:
        super().__init__()
        self.net = net
        self.num_params = num_params

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def build_encoder(
    config: ModelConfig, data_dim: int, image_shape: tuple[int, ...] | None, num_params: int
) -> Encoder:
    if config.encoder == Architecture.conv:
        check_image_shape(image_shape, "model.encoder")
        net: nn.Module = ConvEncoderTrunk(config.channels, num_params, image_shape)
    else:
        widths = config.encoder_hidden if config.encoder_hidden is not None else list(reversed(config.hidden))
        net = mlp([data_dim, *widths, num_params])
    return Encoder(net, num_params)
