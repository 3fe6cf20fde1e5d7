"""The per-datapoint inner loop: what it changes, what it leaves alone, where it converges."""

from __future__ import annotations

import torch

from vi_lab.config import LocalFitConfig
from vi_lab.local_fit import RowState, fit_local
from vi_lab.posteriors import LocalPosterior


def _parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_inner_loop_moves_only_rows_in_idx_and_never_the_decoder(linear_model, linear_data):
    torch.manual_seed(0)
    posterior = LocalPosterior(200, 4, LocalFitConfig(max_steps=10, lr=0.05))
    before_table = posterior.params.clone()
    before_decoder = _parameters(linear_model)
    idx = torch.tensor([3, 17, 42, 199])
    stats = posterior.update(linear_model, linear_data[idx], idx)

    changed = (posterior.params != before_table).flatten(1).any(1)  # (N,)
    assert changed[idx].all()
    assert not changed[[i for i in range(200) if i not in idx.tolist()]].any()
    assert (posterior.step[idx] == stats["inner_steps"]).all() and (posterior.step[idx] > 0).all()
    assert posterior.step.sum() == posterior.step[idx].sum()
    for before, after in zip(before_decoder, linear_model.parameters(), strict=True):
        assert torch.equal(before, after) and after.grad is None
    assert (stats["inner_gain"] > 0).all()  # the loop improved every row's bound


def test_second_visit_continues_the_row_optimizer_state(linear_model, linear_data):
    torch.manual_seed(1)
    posterior = LocalPosterior(200, 4, LocalFitConfig(max_steps=5, lr=0.05, tol=-1e9))
    idx = torch.tensor([0, 1])
    posterior.update(linear_model, linear_data[idx], idx)
    first_moment = posterior.exp_avg[idx].clone()
    posterior.update(linear_model, linear_data[idx], idx)
    assert (posterior.step[idx] == 10).all()  # bias correction continues from step 5
    assert not torch.equal(posterior.exp_avg[idx], first_moment)


def test_rows_stop_on_their_own(linear_model, linear_data):
    """A row already at its optimum stops long before the cap while a far one goes on."""
    torch.manual_seed(2)
    x = linear_data[:2]
    loc, log_scale = linear_model.best_diagonal(x)
    with torch.no_grad():
        loc[1] += 5.0
    config = LocalFitConfig(
        max_steps=3000, lr=0.05, tol=0.01, patience=50, num_decays=2, smoothing=0.05, num_samples=10
    )
    fit = fit_local(linear_model, x, RowState.start_at(loc, log_scale), config)
    assert fit.steps[0] < fit.steps[1] < 3000


def test_fit_reaches_the_closed_form_best_diagonal(linear_model, linear_data):
    """From the prior, the refinement defaults reach q* within 0.01 nats per point."""
    from vi_lab.config import EvalConfig

    torch.manual_seed(3)
    x = linear_data[:100]
    fit = fit_local(linear_model, x, RowState.prior(100, 4, x.device), EvalConfig().refine)
    with torch.no_grad():
        best = linear_model.exact_elbo(x, *linear_model.best_diagonal(x))
        reached = linear_model.exact_elbo(x, fit.state.loc, fit.state.log_scale)
    gap = best - reached
    assert gap.mean() < 0.01, gap.mean()
    assert gap.min() > -1e-3  # nothing beats the optimum of the family
    assert not fit.capped.any()
