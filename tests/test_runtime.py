"""How the same computation executes: the compiled inner-loop step gives the eager numbers,
and bf16 is refused, in one line, where it is not offered."""

from __future__ import annotations

import pytest
import torch

from vi_lab.cli import main
from vi_lab.config import ConfigError, Likelihood, LocalFitConfig, Precision, load_config
from vi_lab.data.datasets import load_data
from vi_lab.inference.families import Diagonal
from vi_lab.inference.local_fit import RowState, fit_local
from vi_lab.models.decoders import NeuralDecoder
from vi_lab.models.model import build_model
from vi_lab.models.nets import mlp
from vi_lab.runtime import check_precision


def _fit(decoder: NeuralDecoder, x: torch.Tensor, rows: RowState, compiled: bool, seed: int):
    config = LocalFitConfig(max_steps=5, num_samples=2, tol=-1e9)  # exactly 5 steps
    torch.manual_seed(seed)
    return fit_local(decoder, Diagonal(3), x, rows, config, compiled=compiled)


@pytest.mark.slow
def test_compiled_inner_loop_gives_the_eager_numbers(monkeypatch):
    """torch.compile (Inductor on CPU) of the step: the same arithmetic on the same noise,
    reordered by kernel fusion. After 5 Adam steps of 8 rows of a tiny MLP decoder the rows
    agree to 1e-5 (float32 rounding is ~1e-7 per operation), the whole step is one graph
    (no graph break around its autograd call), and, as a negative control, other noise
    moves the rows by more than 1e-2."""
    import torch._dynamo
    import torch._inductor.config

    # Compile in this process: a pool of compile workers costs more than it saves on 2 cores.
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1)
    torch.manual_seed(0)
    decoder = NeuralDecoder(mlp([3, 8, 12]), Likelihood.bernoulli, latent_dim=3, data_dim=12)
    decoder.requires_grad_(False)
    x = (torch.rand(8, 12) > 0.5).float()
    rows = RowState.start_at(Diagonal(3).pack(torch.randn(8, 3), 0.3 * torch.randn(8, 3)))

    torch._dynamo.utils.counters.clear()
    compiled = _fit(decoder, x, rows, compiled=True, seed=1)
    assert not torch._dynamo.utils.counters["graph_break"]
    eager = _fit(decoder, x, rows, compiled=False, seed=1)
    other_noise = _fit(decoder, x, rows, compiled=False, seed=2)

    torch.testing.assert_close(compiled.state.params, eager.state.params, atol=1e-5, rtol=0)
    torch.testing.assert_close(compiled.state.exp_avg_sq, eager.state.exp_avg_sq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled.last_elbo, eager.last_elbo, atol=1e-4, rtol=1e-5)
    assert torch.equal(compiled.steps, eager.steps)
    assert (other_noise.state.params - eager.state.params).abs().max() > 1e-2


def test_runtime_compile_reaches_the_inner_loop():
    config = load_config("configs/linear_gaussian.yaml", ["inference.kind=local", "runtime.compile=true"])
    model = build_model(config, load_data(config.data, torch.device("cpu")))
    assert model.posterior.compiled


def test_bf16_is_refused_on_a_cpu_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="bf16 needs a CUDA device"):
        check_precision(Precision.bf16, torch.device("cpu"))
    check_precision(Precision.float32, torch.device("cpu"))  # the default is offered everywhere
    overrides = ["device=cpu", "runtime.precision=bf16"]
    code = main(["train", "configs/smoke.yaml", *overrides, "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bf16 needs a CUDA device" in err
    assert not (tmp_path / "r").exists()  # refused before anything is written
