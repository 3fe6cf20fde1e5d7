"""Shared fixtures: a linear-Gaussian model with a correlated posterior, and its data."""

from __future__ import annotations

import math

import pytest
import torch

from vi_lab.linear_gaussian import LinearGaussianDecoder

# The tests' tensors are small: per-operation overhead dominates, and a second thread only
# adds contention when other processes share the two cores.
torch.set_num_threads(1)


@pytest.fixture
def linear_model() -> LinearGaussianDecoder:
    """16-dim data, 4-dim latent; W dense so the exact posterior is far from diagonal."""
    generator = torch.Generator().manual_seed(0)
    model = LinearGaussianDecoder(16, 4)
    with torch.no_grad():
        model.weight.copy_(torch.randn(16, 4, generator=generator))
        model.bias.copy_(torch.randn(16, generator=generator))
        model.log_noise.fill_(math.log(0.5))
    return model


@pytest.fixture
def linear_data(linear_model: LinearGaussianDecoder) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(1, 200, 4, generator=generator)
    with torch.no_grad():
        mean = linear_model.mean(z)[0]
    return mean + 0.5 * torch.randn(mean.shape, generator=generator)  # (200, 16)
