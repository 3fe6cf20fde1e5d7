"""Network pieces shared by decoders and encoders: the MLP and the two conv trunks for 28x28 images.

`ConvDecoderTrunk` maps z up to an image (a linear map to 7x7, two transposed convolutions),
`ConvEncoderTrunk` maps an image down to the encoder's outputs (two stride-2 convolutions,
a linear head); `check_image_shape` is the one check that the data suit them.
"""

from __future__ import annotations

import itertools

from torch import Tensor, nn

IMAGE_SHAPE = (1, 28, 28)


def check_image_shape(image_shape: tuple[int, ...] | None, key: str) -> None:
    """Raise ValueError unless the data are 28x28 single-channel images (`key` is the setting asking)."""
    if image_shape != IMAGE_SHAPE:
        raise ValueError(
            f"{key}=conv needs 28x28 single-channel images, the data has shape {image_shape}; use {key}=mlp"
        )


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ELU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class ConvDecoderTrunk(nn.Module):
    """z (N, D) -> (N, out_channels, H, W) for 28x28 images: a linear map to 7x7, two 2x upsamplings."""

    def __init__(self, latent_dim: int, channels: list[int], out_channels: int) -> None:
        super().__init__()
        wide, narrow = channels[-1], channels[0]
        self.project = nn.Sequential(nn.Linear(latent_dim, wide * 7 * 7), nn.ELU())
        self.wide = wide
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(wide, narrow, 4, stride=2, padding=1),  # 7 -> 14
            nn.ELU(),
            nn.ConvTranspose2d(narrow, out_channels, 4, stride=2, padding=1),  # 14 -> 28
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(-1, self.wide, 7, 7)  # (N, C, 7, 7)
        return self.upsample(h).flatten(2)  # (N, out_channels, 784)


class ConvEncoderTrunk(nn.Sequential):
    """(B, 784) -> (B, num_outputs): unflatten to 28x28, two stride-2 convolutions, a linear head."""

    def __init__(self, channels: list[int], num_outputs: int) -> None:
        narrow, wide = channels[0], channels[-1]
        super().__init__(
            nn.Unflatten(1, (1, 28, 28)),
            nn.Conv2d(1, narrow, 4, stride=2, padding=1),  # 28 -> 14
            nn.ELU(),
            nn.Conv2d(narrow, wide, 4, stride=2, padding=1),  # 14 -> 7
            nn.ELU(),
            nn.Flatten(),
            nn.Linear(wide * 7 * 7, num_outputs),
        )
