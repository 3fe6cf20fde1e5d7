"""The two posteriors behind one interface: `posterior(x, idx) -> (loc, log_scale)`.

- `AmortizedPosterior`: an encoder q_phi(z | x) (Kingma & Welling 2014); trained by
  the same gradient step as the decoder.
- `LocalPosterior`: a table of (loc, log_scale) rows, one per training example, with
  per-row Adam state, fitted by coordinate ascent (Hoffman et al. 2013; Krishnan et al.
  2018): before each decoder step, `update` runs the inner loop on the minibatch's rows
  with the decoder frozen.

Both also offer `update(decoder, x, idx)` (the work before a decoder step: none for an
encoder), `infer(decoder, x)` (q for points that have no row, e.g. validation data) and
`guess(x)` (where test-time refinement starts: the encoder's q, or the prior).
Training, refinement and evaluation call these and never ask which kind they hold.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vi_lab.config import InnerLoopConfig
from vi_lab.inference import gaussian
from vi_lab.inference.local_fit import RowState, fit_local
from vi_lab.inference.objectives import Decoder
from vi_lab.models.encoders import Encoder


class AmortizedPosterior(nn.Module):
    amortized = True

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor, idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def update(self, decoder: Decoder, x: Tensor, idx: Tensor, beta: float = 1.0) -> dict[str, Tensor]:
        return {}

    def infer(self, decoder: Decoder, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def guess(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)


class LocalPosterior(nn.Module):
    amortized = False

    def __init__(
        self, num_points: int, latent_dim: int, inner: InnerLoopConfig, compiled: bool = False
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.inner = inner
        self.compiled = compiled  # the inner loop's steps through torch.compile (`runtime.compile`)
        rows = RowState.prior(num_points, latent_dim, torch.device("cpu"))
        # Buffers, not parameters: the decoder's optimizer never sees the table.
        self.register_buffer("params", rows.params)  # (N, 2, D)
        self.register_buffer("exp_avg", rows.exp_avg)
        self.register_buffer("exp_avg_sq", rows.exp_avg_sq)
        self.register_buffer("step", rows.step)  # (N,)

    @property
    def rows(self) -> RowState:
        return RowState(self.params, self.exp_avg, self.exp_avg_sq, self.step)

    def forward(self, x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        params = self.params[idx]  # (B, 2, D)
        return params[:, 0], params[:, 1]

    def update(self, decoder: Decoder, x: Tensor, idx: Tensor, beta: float = 1.0) -> dict[str, Tensor]:
        """Run the inner loop on rows idx; only those rows (and their state) change.

        With `inner.reset_state` each visit starts with fresh Adam moments (the rows'
        values are kept either way); otherwise a visit continues the last one's state.
        """
        rows = self.rows.rows(idx)
        rows = rows.fresh() if self.inner.reset_state else rows
        fit = fit_local(decoder, x, rows, self.inner, beta, self.compiled)
        self.rows.put_rows(idx, fit.state)
        return {"inner_steps": fit.steps.float(), "inner_gain": fit.last_elbo - fit.first_elbo}

    def infer(self, decoder: Decoder, x: Tensor) -> tuple[Tensor, Tensor]:
        """Fresh rows for unseen points, fitted from the prior by the same inner loop."""
        rows = RowState.prior(x.shape[0], self.latent_dim, x.device)
        fit = fit_local(decoder, x, rows, self.inner, compiled=self.compiled)
        return fit.state.loc, fit.state.log_scale

    def guess(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return gaussian.standard_normal_params(x.shape[0], self.latent_dim, x.device)
