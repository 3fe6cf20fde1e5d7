"""Shared fixtures: a linear-Gaussian model with a correlated posterior, and its data
(built by tests/linear_gaussian.py, the one home of the tests' linear-Gaussian models)."""

from __future__ import annotations

import pytest
import torch

from tests.linear_gaussian import dense_decoder, noisy_data
from vi_lab.models.linear_gaussian import LinearGaussianDecoder

# The tests' tensors are small: per-operation overhead dominates, and a second thread only
# adds contention when other processes share the two cores.
torch.set_num_threads(1)


@pytest.fixture
def linear_model() -> LinearGaussianDecoder:
    """16-dim data, 4-dim latent; W dense so the exact posterior is far from diagonal."""
    return dense_decoder()


@pytest.fixture
def linear_data(linear_model: LinearGaussianDecoder) -> torch.Tensor:
    return noisy_data(linear_model)  # (200, 16)
