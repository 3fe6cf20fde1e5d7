"""A trained thing: one decoder and one posterior (encoder or per-datapoint table) in one
variational family."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vi_lab.config import Config, ConfigError, InferenceKind
from vi_lab.data.datasets import Data
from vi_lab.distributed import WHOLE, Shard
from vi_lab.inference.families import Family, build_family
from vi_lab.models.decoders import build_decoder
from vi_lab.models.encoders import build_encoder
from vi_lab.models.posteriors import AmortizedPosterior, LocalPosterior, SemiAmortizedPosterior
from vi_lab.runtime import available_bytes

Posterior = AmortizedPosterior | LocalPosterior | SemiAmortizedPosterior
TABLE_FRACTION = 0.8  # of the memory available, the most a per-datapoint table may take


class LatentVariableModel(nn.Module):
    """Holds decoder and posterior so that one state dict and one optimizer cover both."""

    def __init__(self, decoder: nn.Module, posterior: Posterior) -> None:
        super().__init__()
        self.decoder = decoder
        self.posterior = posterior

    @property
    def family(self) -> Family:
        return self.posterior.family

    def forward(self, x: Tensor, idx: Tensor, beta: float = 1.0, num_samples: int = 1) -> dict[str, Tensor]:
        """The training step's per-example terms on the minibatch (x, idx):
        `posterior.training_terms`, as a forward pass, so that DistributedDataParallel can wrap
        the model (its forward readies the all-reduce of the gradients)."""
        return self.posterior.training_terms(self.decoder, x, idx, beta, num_samples)

    @property
    def table_keys(self) -> list[str]:
        """State-dict keys holding one entry per training row (sharded over ranks), if any."""
        return [f"posterior.{name}" for name in self.posterior.TABLE]


def table_bytes(num_rows: int, family: Family) -> int:
    """Bytes of a per-datapoint table: each row's params and Adam's two moments (float32, P each)
    and its step count."""
    return num_rows * (3 * family.num_params + 1) * 4


def check_table_fits(num_rows: int, family: Family, device_type: str) -> None:
    """ConfigError (one line) when the table would take more than TABLE_FRACTION of the memory
    available: on the CPU, where it is built, and on the device it moves to."""
    need = table_bytes(num_rows, family)
    for where in dict.fromkeys(["cpu", device_type]):
        have = available_bytes(where)
        if have is not None and need > TABLE_FRACTION * have:
            raise ConfigError(
                f"inference.family: the per-datapoint table of {num_rows} rows x {family.num_params} "
                f"{family.name} parameters needs {need / 2**30:.2f} GiB with Adam's moments, but "
                f"{where} has {have / 2**30:.2f} GiB available; use inference.family=diagonal, a smaller "
                "model.latent_dim or inference.flow.num_layers, or fewer data.num_train"
            )


def network_bytes(config: Config, data: Data, num_params: int) -> int:
    """Bytes of the decoder and encoder in training: each parameter, its gradient and Adam's two
    moments (float32). Counted on networks built on the meta device: nothing is allocated and
    the random streams are left as they were."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        networks = [build_decoder(config.model, data.data_dim, data.image_shape)]
        if config.inference.kind != InferenceKind.local:
            networks.append(build_encoder(config.model, data.data_dim, data.image_shape, num_params))
    return 4 * 4 * sum(p.numel() for network in networks for p in network.parameters())


def check_networks_fit(config: Config, data: Data, family: Family) -> None:
    """ConfigError (one line) when the networks in training would take more than TABLE_FRACTION of
    the memory available on the CPU, where they are built, or on the device they move to."""
    need = network_bytes(config, data, family.num_params)
    for where in dict.fromkeys(["cpu", data.x["train"].device.type]):
        have = available_bytes(where)
        if have is not None and need > TABLE_FRACTION * have:
            raise ConfigError(
                f"model: the networks need {need / 2**30:.2f} GiB with their gradients and "
                f"Adam's moments, but {where} has {have / 2**30:.2f} GiB available; use a smaller "
                "model.latent_dim, model.hidden or model.channels"
            )


def build_model(config: Config, data: Data, shard: Shard = WHOLE) -> LatentVariableModel:
    """The model of `config`; a per-datapoint table holds only the rows of `shard` (all by default).
    Its memory is checked before anything is allocated (`check_networks_fit`, `check_table_fits`)."""
    family = build_family(config.inference.family, config.model.latent_dim, config.inference)
    check_networks_fit(config, data, family)
    decoder = build_decoder(config.model, data.data_dim, data.image_shape)
    kind = config.inference.kind
    if kind == InferenceKind.local:
        num_rows = shard.num_rows(data.num_train)
        check_table_fits(num_rows, family, data.x["train"].device.type)
        posterior: Posterior = LocalPosterior(
            data.num_train, family, config.inference.inner, shard, compiled=config.runtime.compile
        )
    else:  # an encoder, built after the decoder: same seed, same weights in both encoder modes
        encoder = build_encoder(config.model, data.data_dim, data.image_shape, family.num_params)
        posterior = (
            AmortizedPosterior(encoder, family)
            if kind == InferenceKind.amortized
            else SemiAmortizedPosterior(encoder, family, config.inference.refine)
        )
    return LatentVariableModel(decoder, posterior)
