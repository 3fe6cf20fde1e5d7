"""The three posteriors behind one interface: `posterior(x, idx) -> params` (N, P), the params
of each point's q in the posterior's variational family (`posterior.family`,
`vi_lab.inference.families`): the encoder emits them, the table holds them.

- `AmortizedPosterior`: an encoder q_phi(z | x) (Kingma & Welling 2014); trained by
  the same gradient step as the decoder.
- `LocalPosterior`: a table of params rows, one per training example, with
  per-row Adam state, fitted by coordinate ascent (Hoffman et al. 2013; Krishnan et al.
  2018): before each decoder step, `update` runs the inner loop on the minibatch's rows
  with the decoder frozen. Under torchrun each rank keeps only the rows it owns
  (`vi_lab.distributed.Shard`), so the table's memory per rank falls as ranks are added;
  `idx` stays the global row index everywhere.
- `SemiAmortizedPosterior`: an encoder whose q is refined by K steps before the decoder
  learns from it (Kim et al. 2018; Krishnan, Liang & Hoffman 2018): `inference/unrolled.py`.

All also offer `training_terms(decoder, x, idx, beta, num_samples)` (the per-example terms
of a training step, "objective" being what the step maximizes, with whatever work precedes
the decoder's step: the table's inner loop, the K refinement steps), `infer(decoder, x)` (q
for points that have no row, e.g. validation data) and `guess(x)` (where test-time
refinement starts: the encoder's q, or the prior). Training, refinement and evaluation
call these and never ask which kind they hold.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vi_lab.config import EncoderGradient, InnerLoopConfig, RefineStepsConfig
from vi_lab.distributed import WHOLE, Shard
from vi_lab.inference.families import Family
from vi_lab.inference.local_fit import RowState, fit_local
from vi_lab.inference.objectives import Decoder, training_terms
from vi_lab.inference.unrolled import refine_steps
from vi_lab.models.encoders import Encoder


class AmortizedPosterior(nn.Module):
    amortized = True
    TABLE: tuple[str, ...] = ()  # no state per training row

    def __init__(self, encoder: Encoder, family: Family) -> None:
        super().__init__()
        self.encoder = encoder
        self.family = family

    def forward(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        return self.encoder(x)

    def training_terms(
        self, decoder: Decoder, x: Tensor, idx: Tensor, beta: float = 1.0, num_samples: int = 1
    ) -> dict[str, Tensor]:
        return training_terms(decoder, self.family, x, self.encoder(x), num_samples, beta)

    def infer(self, decoder: Decoder, x: Tensor) -> Tensor:
        return self.encoder(x)

    def guess(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class LocalPosterior(nn.Module):
    amortized = False
    TABLE: tuple[str, ...] = ("params", "exp_avg", "exp_avg_sq", "step")  # buffers with one entry per row

    def __init__(
        self,
        num_points: int,
        family: Family,
        inner: InnerLoopConfig,
        shard: Shard = WHOLE,
        compiled: bool = False,
    ) -> None:
        super().__init__()
        self.family = family
        self.inner = inner
        self.shard = shard
        self.compiled = compiled  # the inner loop's steps through torch.compile (`runtime.compile`)
        rows = RowState.prior(shard.num_rows(num_points), family, torch.device("cpu"))
        # Buffers, not parameters: the decoder's optimizer never sees the table.
        self.register_buffer("params", rows.params)  # (N, P)
        self.register_buffer("exp_avg", rows.exp_avg)
        self.register_buffer("exp_avg_sq", rows.exp_avg_sq)
        self.register_buffer("step", rows.step)  # (N,)

    @property
    def rows(self) -> RowState:
        return RowState(self.params, self.exp_avg, self.exp_avg_sq, self.step)

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        return self.params[self.shard.local(idx)]  # (B, P)

    def training_terms(
        self, decoder: Decoder, x: Tensor, idx: Tensor, beta: float = 1.0, num_samples: int = 1
    ) -> dict[str, Tensor]:
        """The inner loop on rows idx (`update`), then the terms of the fitted rows."""
        stats = self.update(decoder, x, idx, beta)
        return {**training_terms(decoder, self.family, x, self(x, idx), num_samples, beta), **stats}

    def update(self, decoder: Decoder, x: Tensor, idx: Tensor, beta: float = 1.0) -> dict[str, Tensor]:
        """Run the inner loop on rows idx (rows this rank owns); only those rows (and their state) change.

        With `inner.reset_state` each visit starts with fresh Adam moments (the rows'
        values are kept either way); otherwise a visit continues the last one's state.
        """
        local = self.shard.local(idx)
        rows = self.rows.rows(local)
        rows = rows.fresh() if self.inner.reset_state else rows
        fit = fit_local(decoder, self.family, x, rows, self.inner, beta, self.compiled)
        self.rows.put_rows(local, fit.state)
        return {"inner_steps": fit.steps.float(), "inner_gain": fit.last_elbo - fit.first_elbo}

    def infer(self, decoder: Decoder, x: Tensor) -> Tensor:
        """Fresh rows for unseen points, fitted from the prior by the same inner loop."""
        rows = RowState.prior(x.shape[0], self.family, x.device)
        return fit_local(decoder, self.family, x, rows, self.inner, compiled=self.compiled).state.params

    def guess(self, x: Tensor) -> Tensor:
        return self.family.prior(x.shape[0], x.device)


class SemiAmortizedPosterior(nn.Module):
    """An encoder's q refined by `refine.num_steps` steps (`inference/unrolled.py`).

    The decoder learns from the refined q. The encoder learns, by `refine.encoder_gradient`:
    - `backprop` (SA-VAE, Kim et al. 2018): from the ELBO of the refined q, through the steps;
    - `stop_gradient` (Krishnan, Liang & Hoffman 2018): from the ELBO of its own q. Its
      gradient there is g_0, which the first step has computed already; the surrogate
      sum(g_0 * lambda_0) - sum(g_0 * sg(lambda_0)), of value 0, hands it to autograd.
    With K = 0 the refined q is the encoder's q and one ELBO trains both, as in an amortized
    run (same parameters, same random numbers).
    """

    amortized = True
    TABLE: tuple[str, ...] = ()

    def __init__(self, encoder: Encoder, family: Family, refine: RefineStepsConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.family = family
        self.refine = refine

    def forward(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        return self.encoder(x)

    def training_terms(
        self, decoder: Decoder, x: Tensor, idx: Tensor, beta: float = 1.0, num_samples: int = 1
    ) -> dict[str, Tensor]:
        """Terms of the refined q, plus `elbo_encoder` and `elbo_refined` (their difference
        is the amortization gap that the K steps close, measured during training)."""
        start = self.encoder(x)  # (B, P)
        backprop = self.refine.encoder_gradient == EncoderGradient.backprop
        steps = refine_steps(decoder, self.family, x, start, self.refine, beta, differentiable=backprop)
        terms = training_terms(decoder, self.family, x, steps.params, num_samples, beta)
        if steps.first_grad is None:  # K = 0
            return {**terms, "elbo_encoder": terms["elbo"], "elbo_refined": terms["elbo"]}
        if not backprop:
            surrogate = (steps.first_grad * (start - start.detach())).sum(1)  # (B,) zeros
            terms["objective"] = terms["objective"] + surrogate
        return {**terms, "elbo_encoder": steps.first_elbo, "elbo_refined": terms["elbo"]}

    def infer(self, decoder: Decoder, x: Tensor) -> Tensor:
        """The encoder's q refined by the same K steps as in training, outside any graph."""
        with torch.no_grad():
            return refine_steps(decoder, self.family, x, self.encoder(x), self.refine).params

    def guess(self, x: Tensor) -> Tensor:
        return self.encoder(x)
