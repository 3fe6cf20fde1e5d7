"""K refinement steps from an encoder's guess: the inner loop of semi-amortized inference.

Kim, Wiseman, Miller, Sontag & Rush (2018), "Semi-Amortized Variational Autoencoders",
Algorithm 1: lambda_0 = the encoder's params of q (any family), then K ascent steps on the
(beta-weighted) ELBO of each point with the decoder fixed,
    lambda_{k+1} = lambda_k + update(g_k),    g_k = grad_lambda ELBO(x; lambda_k),
where g_k is the reparameterization gradient of the family's `elbo_and_gradient` (the
per-datapoint inner loop's gradient) and the update is a plain step lr * g_k or Adam's
(`local_fit.adam_step`, with fresh moments at every call).

- `differentiable=False` (stop-gradient; Krishnan, Liang & Hoffman 2018): the steps run
  outside the autograd graph and lambda_K is a constant for the training step.
- `differentiable=True` (SA-VAE): each g_k is taken with `create_graph=True`, so lambda_K is a
  differentiable function of lambda_0 and of the decoder's parameters; backward through a
  loss on lambda_K gives the total derivative, the Hessian-vector products that Kim et al.
  approximate by finite differences included exactly.

Clipping, as Kim et al. do: each point's g_k is rescaled to norm at most `max_grad_norm`
(the rescaling is differentiated like every other operation), and with `differentiable`
so is the gradient that flows back into each lambda_k during backward.
With K = 0, lambda_K is lambda_0 itself, graph included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vi_lab.config import RefineOptimizer, RefineStepsConfig
from vi_lab.inference.families import Family
from vi_lab.inference.local_fit import adam_step
from vi_lab.inference.objectives import Decoder, elbo_and_gradient


@dataclass
class Unrolled:
    params: Tensor  # (B, P) lambda_K
    first_elbo: Tensor | None  # (B,) ELBO estimate (beta = 1) at lambda_0, no graph; None when K = 0
    first_grad: Tensor | None  # (B, P) g_0 at lambda_0 (before clipping), no graph; None when K = 0


def clip_rows(grad: Tensor, max_norm: float) -> Tensor:
    """Each row of grad (B, ...) rescaled to Euclidean norm at most max_norm (0: unchanged)."""
    if max_norm == 0:
        return grad
    norm = grad.flatten(1).norm(dim=1)  # (B,)
    factor = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    return grad * factor.view(-1, *[1] * (grad.dim() - 1))


def refine_steps(
    decoder: Decoder,
    family: Family,
    x: Tensor,
    params: Tensor,
    config: RefineStepsConfig,
    beta: float = 1.0,
    differentiable: bool = False,
) -> Unrolled:
    """`config.num_steps` steps from params (B, P); see the module docstring."""
    zeros = torch.zeros_like(params.detach())
    moments = zeros, zeros  # Adam's, fresh
    ones = torch.ones(params.shape[0], dtype=params.dtype, device=params.device)  # (B,)
    step, lr = torch.zeros_like(ones), ones * config.lr
    scales = family.step_scales(params.device)  # (P,) or None
    first_elbo = first_grad = None
    for k in range(config.num_steps):
        with torch.set_grad_enabled(differentiable):
            if differentiable and params.requires_grad and config.max_grad_norm > 0:
                params.register_hook(lambda g: clip_rows(g, config.max_grad_norm))
            recon, kl, grad = elbo_and_gradient(
                decoder, family, x, params, config.num_samples, beta, create_graph=differentiable
            )  # (B,), (B,), (B, P)
            if k == 0:
                first_elbo, first_grad = recon - kl, grad.detach()
            grad = clip_rows(grad, config.max_grad_norm)
            if config.optimizer == RefineOptimizer.adam:
                params, *moments, step = adam_step(params, grad, *moments, step, lr, ones, scales)
            else:
                params = params + config.lr * grad
    return Unrolled(params, first_elbo, first_grad)
