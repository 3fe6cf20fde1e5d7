"""Conv networks for any image shape (C, H, W), H and W multiples of 4, and the discretized logistic.

The conv decoder's output for parameter k of channel c, pixel (h, w) must sit at the data's
flattened index c*H*W + h*W + w; the discretized logistic must be a distribution over the 256
levels of a pixel.
"""

from __future__ import annotations

import pytest
import torch

from vi_lab.config import Architecture, Likelihood, ModelConfig
from vi_lab.models.decoders import NUM_LEVELS, build_decoder
from vi_lab.models.encoders import build_encoder
from vi_lab.models.nets import ConvDecoderTrunk, ConvEncoderTrunk, check_image_shape

CIFAR = (3, 32, 32)


def test_decoder_trunk_lays_out_parameters_channels_and_pixels_like_the_data():
    torch.manual_seed(0)
    trunk = ConvDecoderTrunk(latent_dim=5, channels=[4, 8], out_channels=2, image_shape=CIFAR)
    z = torch.randn(7, 5)
    out = trunk(z)  # (7, 2, 3072)
    assert out.shape == (7, 2, 3 * 32 * 32)
    h = trunk.project(z).view(7, 8, 8, 8)
    image = trunk.upsample(h)  # (7, 2 * 3, 32, 32): channels of parameter 0, then of parameter 1
    k, c, row, col = 1, 2, 5, 17
    assert torch.equal(out[:, k, c * 32 * 32 + row * 32 + col], image[:, k * 3 + c, row, col])


def test_encoder_trunk_any_shape_and_its_output_width():
    trunk = ConvEncoderTrunk([4, 8], num_outputs=6, image_shape=(3, 8, 12))
    assert trunk(torch.rand(2, 3 * 8 * 12)).shape == (2, 6)
    assert ConvEncoderTrunk([4, 8], 10)(torch.rand(2, 784)).shape == (2, 10)  # 1x28x28 by default


@pytest.mark.parametrize("shape", [None, (3, 30, 32), (784,)])
def test_conv_refuses_shapes_it_cannot_take_in_one_line(shape):
    with pytest.raises(
        ValueError, match=r"model\.decoder=conv needs images .* use model\.decoder=mlp"
    ) as info:
        check_image_shape(shape, "model.decoder")
    assert "\n" not in str(info.value) and str(shape) in str(info.value)
    check_image_shape(CIFAR, "model.decoder")


def test_conv_model_on_colour_images():
    config = ModelConfig(
        latent_dim=3, decoder=Architecture.conv, encoder=Architecture.conv,
        likelihood=Likelihood.discretized_logistic, channels=[4, 8],
    )  # fmt: skip
    decoder = build_decoder(config, 3072, CIFAR)
    encoder = build_encoder(config, 3072, CIFAR, num_params=6)
    x = torch.randint(0, 256, (4, 3072)).float() / 255
    assert encoder(x).shape == (4, 6)
    log_p = decoder.log_prob(x, torch.randn(2, 4, 3))
    assert log_p.shape == (2, 4) and bool((log_p < 0).all())
    sample = decoder.sample(torch.randn(4, 3))
    assert sample.shape == (4, 3072) and torch.equal(sample, (sample * 255).round() / 255)


def test_discretized_logistic_is_a_distribution_over_the_levels():
    config = ModelConfig(latent_dim=2, hidden=[4], likelihood=Likelihood.discretized_logistic)
    decoder = build_decoder(config, 3, None)
    with torch.no_grad():  # three pixels: sharp at an edge, sharp in the middle, wide
        decoder.net[-1].weight.zero_()
        decoder.net[-1].bias.copy_(torch.tensor([0.001, 128 / 255, 0.3, -10.0, -6.0, 1.0]))
    levels = torch.arange(NUM_LEVELS).float() / (NUM_LEVELS - 1)
    x = levels[:, None].expand(NUM_LEVELS, 3)  # every level in every pixel
    with torch.no_grad():
        log_p = decoder.log_prob_pixels(x, torch.zeros(1, NUM_LEVELS, 2))[0]  # (256, 3)
    total = log_p.exp().sum(0)
    torch.testing.assert_close(total, torch.ones(3), atol=1e-4, rtol=0)
    assert log_p[:, 0].argmax() == 0 and log_p[:, 1].argmax() == 128  # the mass sits at the location
    # a negative control: a Gaussian density at the same points is not a distribution over levels
    gaussian = build_decoder(ModelConfig(latent_dim=2, hidden=[4], likelihood=Likelihood.gaussian), 3, None)
    gaussian.load_state_dict(decoder.state_dict())
    with torch.no_grad():
        density = gaussian.log_prob_pixels(x, torch.zeros(1, NUM_LEVELS, 2))[0].exp().sum(0)
    assert (density - 1).abs().max() > 1.0
