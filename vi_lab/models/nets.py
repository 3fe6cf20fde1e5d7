"""Network pieces shared by decoders and encoders: the MLP and the two conv trunks for images.

The trunks take any image shape (C, H, W) whose height and width are multiples of 4 (1x28x28
MNIST-like digits, 3x32x32 CIFAR-10): `ConvDecoderTrunk` maps z up to the image (a linear map
to (H/4, W/4), two transposed convolutions that double the size), `ConvEncoderTrunk` maps
the image down to the encoder's outputs (two stride-2 convolutions, a linear head);
`check_image_shape` is the one check that the data suit them.
"""

from __future__ import annotations

import itertools

from torch import Tensor, nn

IMAGE_SHAPE = (1, 28, 28)  # the default: single-channel 28x28 images


def check_image_shape(image_shape: tuple[int, ...] | None, key: str) -> None:
    """Raise ValueError unless the data are images (C, H, W) with H and W multiples of 4 (`key` asks)."""
    if image_shape is None or len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
        raise ValueError(
            f"{key}=conv needs images (C, H, W) whose height and width are multiples of 4 (e.g. 1x28x28, "
            f"3x32x32), the data has shape {image_shape}; use {key}=mlp"
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
    """z (N, D) -> (N, out_channels, C*H*W): a linear map to (H/4, W/4), two 2x upsamplings.

    `out_channels` likelihood parameters per pixel; parameter k of every pixel, flattened in the
    data's (C, H, W) order, is output channel k.
    """

    def __init__(
        self,
        latent_dim: int,
        channels: list[int],
        out_channels: int,
        image_shape: tuple[int, ...] = IMAGE_SHAPE,
    ) -> None:
        super().__init__()
        check_image_shape(image_shape, "model.decoder")
        wide, narrow = channels[-1], channels[0]
        image_channels, height, width = image_shape
        self.wide, self.grid = wide, (height // 4, width // 4)
        self.out_channels = out_channels
        self.project = nn.Sequential(nn.Linear(latent_dim, wide * self.grid[0] * self.grid[1]), nn.ELU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(wide, narrow, 4, stride=2, padding=1),  # H/4 -> H/2
            nn.ELU(),
            nn.ConvTranspose2d(narrow, out_channels * image_channels, 4, stride=2, padding=1),  # H/2 -> H
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(-1, self.wide, *self.grid)  # (N, wide, H/4, W/4)
        out = self.upsample(h)  # (N, out_channels * C, H, W)
        return out.reshape(out.shape[0], self.out_channels, -1)  # (N, out_channels, C*H*W)


class ConvEncoderTrunk(nn.Sequential):
    """(B, C*H*W) -> (B, num_outputs): unflatten to (C, H, W), two stride-2 convolutions, a linear head."""

    def __init__(
        self, channels: list[int], num_outputs: int, image_shape: tuple[int, ...] = IMAGE_SHAPE
    ) -> None:
        check_image_shape(image_shape, "model.encoder")
        narrow, wide = channels[0], channels[-1]
        image_channels, height, width = image_shape
        super().__init__(
            nn.Unflatten(1, tuple(image_shape)),
            nn.Conv2d(image_channels, narrow, 4, stride=2, padding=1),  # H -> H/2
            nn.ELU(),
            nn.Conv2d(narrow, wide, 4, stride=2, padding=1),  # H/2 -> H/4
            nn.ELU(),
            nn.Flatten(),
            nn.Linear(wide * (height // 4) * (width // 4), num_outputs),
        )
