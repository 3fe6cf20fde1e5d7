"""Variational families: what a q is, behind one small interface.

A family has `num_params` parameters per point; a batch of q's is a tensor (N, P). Every
family here is a reparameterized map of standard-normal noise eps (S, N, D) to z, so one
call, `draw(params, eps)`, gives the samples, their log q(z) and a per-point KL estimate:
- `Diagonal`: q = N(loc, diag s^2), params (loc, log s) (Kingma & Welling 2014, Sec. 2.4);
  KL(q || p) in closed form, and a closed-form inner-loop gradient (`elbo_and_gradient`),
  autograd running through the decoder alone.
- `FullCovariance`: q = N(loc, L L^T) with L lower triangular, its diagonal exp(log_diag) > 0
  (the Cholesky parametrization of Kucukelbir et al. 2017, ADVI Sec. 2.4);
  params (loc, log_diag, the D(D - 1)/2 entries below the diagonal, row by row). KL in
  closed form. With zero off-diagonals it is `Diagonal`, draw for draw.
- `PlanarFlow`: a diagonal base N(loc, diag s^2) pushed through K planar layers
  f(z) = z + u' tanh(w^T z + b) (Rezende & Mohamed 2015, Eq. 10-12), per point, with u
  constrained (Appendix A) so that every layer is invertible; log q(z_K) = log q_0(z_0) -
  sum_k log|1 + h'(w^T z + b) w^T u'|. KL(q || p) = KL(q_0 || p) (closed form) + E[log p(z_0)
  - log p(z_K) - sum_k log|det|] (Monte Carlo); with K = 0 it is `Diagonal`, draw for draw.
  docs/families.md says why planar layers.

The prior is N(0, I): `prior(num_points)` gives params whose q is the prior. `FAMILIES`
maps a name to its class and `build_family` builds one from the config; nothing outside
this module asks which family it holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from vi_lab.config import FamilyName, InferenceConfig
from vi_lab.inference import gaussian

# softplus(a + SHIFT) - 1 is 0 at a = 0: a planar layer with u = 0 is the identity
SHIFT = math.log(math.e - 1.0)
LAYER_STEP_SCALE = 0.1  # of the per-row Adam step size, for a planar layer's u, w, b
NORM_FLOOR = 1e-6  # added to |w|^2 in the constraint on u, so that w = 0 gives no NaN


class Draw(NamedTuple):
    """Reparameterized samples of a batch of q's and what the ELBO needs of them."""

    z: Tensor  # (S, N, D)
    log_q: Tensor  # (S, N) log q(z)
    kl: Tensor  # (N,) KL(q || p) in closed form, or (S, N) per-sample terms whose mean estimates it


class ElboGradient(NamedTuple):
    """Per-point estimates at given noise: E_q log p(x | z), KL(q || p) (each (N,)), and the
    gradient of recon - beta * KL with respect to the params, (N, P)."""

    recon: Tensor
    kl: Tensor
    grad: Tensor


def sample_mean(terms: Tensor) -> Tensor:
    """The per-point mean of a Draw's `kl` (or any (N,) or (S, N) terms), (N,)."""
    return terms if terms.dim() == 1 else terms.mean(0)


@dataclass(frozen=True)
class Family:
    """The interface. Subclasses define `num_params`, `prior`, `draw` and `center`; a family
    with a closed-form density or Gaussian form also defines `log_prob` and `gaussian`."""

    name: ClassVar[str]
    is_gaussian: ClassVar[bool] = False  # whether `gaussian` gives q's (loc, scale_tril)
    latent_dim: int

    @property
    def num_params(self) -> int:
        raise NotImplementedError

    @property
    def groups(self) -> dict[str, slice]:
        """Named blocks of the P params (for reports of gradients per block)."""
        raise NotImplementedError

    def prior(self, num_points: int, device: torch.device | str = "cpu") -> Tensor:
        """Params (N, P) whose q is the prior N(0, I)."""
        raise NotImplementedError

    def draw(self, params: Tensor, eps: Tensor) -> Draw:
        """z = T(eps; params) for standard-normal eps (S, N, D), with log q(z) and the KL terms."""
        raise NotImplementedError

    def sample(self, params: Tensor, num_samples: int) -> Draw:
        """`draw` at fresh noise."""
        eps = torch.randn(
            (num_samples, params.shape[0], self.latent_dim), dtype=params.dtype, device=params.device
        )
        return self.draw(params, eps)

    def center(self, params: Tensor) -> Tensor:
        """z at eps = 0, (N, D): the mean of a Gaussian q, the image of the base mean for a flow."""
        raise NotImplementedError

    def log_prob(self, params: Tensor, z: Tensor) -> Tensor:
        """log q(z) at any z (S, N, D), (S, N), where the family has a closed-form inverse."""
        raise NotImplementedError(f"the {self.name} family has no closed-form log q(z) at an arbitrary z")

    def gaussian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """(loc (N, D), scale_tril (N, D, D)) of a Gaussian q, for closed-form checks."""
        raise NotImplementedError(f"a q of the {self.name} family is not Gaussian")

    def closest_to_gaussian(self, loc: Tensor, precision: Tensor) -> Tensor:
        """Params of argmin_q KL(q || N(loc, precision^-1)) over the family, loc (N, D), precision
        (D, D): a family's best q for a Gaussian posterior (the linear-Gaussian model's)."""
        raise NotImplementedError(f"the {self.name} family has no closed-form best q for a Gaussian")

    @classmethod
    def from_config(cls, latent_dim: int, inference: InferenceConfig) -> Family:
        """The family for a latent size, with its settings from the inference config."""
        return cls(latent_dim)

    def step_scales(self, device: torch.device | str = "cpu") -> Tensor | None:
        """Multipliers (P,) of the per-row Adam step size for each parameter (`local_fit.adam_step`),
        or None: every parameter at the row's step size."""
        return None

    def check(self, params: Tensor, name: str = "params") -> None:
        """ValueError unless params is (N, num_params)."""
        if params.dim() != 2 or params.shape[1] != self.num_params:
            raise ValueError(
                f"{name} must have shape (N, {self.num_params}) for the {self.name} family with "
                f"latent size {self.latent_dim}, got {tuple(params.shape)}"
            )

    def elbo_and_gradient(
        self,
        decoder: object,
        x: Tensor,
        params: Tensor,
        eps: Tensor,
        beta: float | Tensor = 1.0,
        create_graph: bool = False,
    ) -> ElboGradient:
        """recon, KL and grad_params (recon - beta * KL) at noise eps (S, N, D), by autograd through
        `draw` and the decoder.

        With `create_graph` the gradient is itself a differentiable function of params and of
        the decoder's parameters (backpropagation through refinement steps, Kim et al. 2018);
        the estimates are returned without a graph either way. The decoder gets no .grad.
        """
        with torch.enable_grad():
            if not (create_graph and params.requires_grad):
                params = params.detach().requires_grad_(True)
            drawn = self.draw(params, eps)
            recon = decoder.log_prob(x, drawn.z).mean(0)  # (N,)
            kl = sample_mean(drawn.kl)
            (grad,) = torch.autograd.grad((recon - beta * kl).sum(), params, create_graph=create_graph)
        return ElboGradient(recon.detach(), kl.detach(), grad)


@dataclass(frozen=True)
class Diagonal(Family):
    name: ClassVar[str] = "diagonal"
    is_gaussian: ClassVar[bool] = True

    @property
    def num_params(self) -> int:
        return 2 * self.latent_dim

    @property
    def groups(self) -> dict[str, slice]:
        d = self.latent_dim
        return {"loc": slice(0, d), "log_scale": slice(d, 2 * d)}

    def pack(self, loc: Tensor, log_scale: Tensor) -> Tensor:
        """Params (N, 2D) of N(loc, diag exp(log_scale)^2)."""
        return torch.cat([loc, log_scale], dim=-1)

    def unpack(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """(loc, log_scale), each (N, D)."""
        return params[..., : self.latent_dim], params[..., self.latent_dim :]

    def prior(self, num_points: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(num_points, self.num_params, device=device)

    def draw(self, params: Tensor, eps: Tensor) -> Draw:
        loc, log_scale = self.unpack(params)
        z = loc + log_scale.exp() * eps  # (S, N, D)
        log_q = gaussian.log_standard_normal(eps) - log_scale.sum(-1)
        return Draw(z, log_q, gaussian.kl_to_standard_normal(loc, log_scale))

    def center(self, params: Tensor) -> Tensor:
        return self.unpack(params)[0]

    def log_prob(self, params: Tensor, z: Tensor) -> Tensor:
        return gaussian.log_density(z, *self.unpack(params))

    def gaussian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_scale = self.unpack(params)
        return loc, torch.diag_embed(log_scale.exp())

    def closest_to_gaussian(self, loc: Tensor, precision: Tensor) -> Tensor:
        """The posterior mean and variances 1 / diag(precision) (Bishop 2006, Sec. 10.1.2)."""
        log_scale = -0.5 * torch.log(torch.diagonal(precision))
        return self.pack(loc, log_scale.expand_as(loc))

    def elbo_and_gradient(
        self,
        decoder: object,
        x: Tensor,
        params: Tensor,
        eps: Tensor,
        beta: float | Tensor = 1.0,
        create_graph: bool = False,
    ) -> ElboGradient:
        """The same values as `Family.elbo_and_gradient`, autograd through the decoder only,
        with z = loc + s * eps as the leaf, and the Gaussian parts in closed form (s = exp(log_scale)):
            d/dloc       = E[grad_z log p(x|z)]              - beta * loc
            d/dlog_scale = E[grad_z log p(x|z) * eps] * s    - beta * (s^2 - 1)
        (the last terms are -beta * dKL(q || N(0, I))): the inner loop's hot path. With
        `create_graph`, grad_z keeps its graph and z is not cut from the params."""
        loc, log_scale = self.unpack(params)
        scale = log_scale.exp()
        with torch.enable_grad():
            z = loc + scale * eps  # (S, N, D)
            if not (create_graph and z.requires_grad):
                z = z.detach().requires_grad_(True)
            recon = decoder.log_prob(x, z)  # (S, N)
            (grad_z,) = torch.autograd.grad(recon.sum(), z, create_graph=create_graph)
        kl = gaussian.kl_to_standard_normal(loc, log_scale)
        kl_loc, kl_log_scale = gaussian.kl_to_standard_normal_gradient(loc, log_scale)
        grad_loc = grad_z.mean(0) - beta * kl_loc
        grad_log_scale = (grad_z * eps).mean(0) * scale - beta * kl_log_scale
        return ElboGradient(recon.detach().mean(0), kl.detach(), torch.cat([grad_loc, grad_log_scale], -1))


@dataclass(frozen=True)
class FullCovariance(Family):
    name: ClassVar[str] = "full"
    is_gaussian: ClassVar[bool] = True

    @property
    def num_off_diagonal(self) -> int:
        return self.latent_dim * (self.latent_dim - 1) // 2

    @property
    def num_params(self) -> int:
        return 2 * self.latent_dim + self.num_off_diagonal

    @property
    def groups(self) -> dict[str, slice]:
        d = self.latent_dim
        return {
            "loc": slice(0, d),
            "log_diag": slice(d, 2 * d),
            "off_diagonal": slice(2 * d, self.num_params),
        }

    def prior(self, num_points: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(num_points, self.num_params, device=device)

    def _parts(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        d = self.latent_dim
        return params[..., :d], params[..., d : 2 * d], params[..., 2 * d :]

    def scale_tril(self, params: Tensor) -> Tensor:
        """L (N, D, D): exp(log_diag) on the diagonal, the off-diagonal params below it."""
        _, log_diag, off = self._parts(params)
        d = self.latent_dim
        rows, cols = torch.tril_indices(d, d, offset=-1, device=params.device)
        index = (rows * d + cols).expand(*off.shape[:-1], -1)
        lower = off.new_zeros(*off.shape[:-1], d * d).scatter(-1, index, off).unflatten(-1, (d, d))
        return lower + torch.diag_embed(log_diag.exp())

    def draw(self, params: Tensor, eps: Tensor) -> Draw:
        loc, log_diag, off = self._parts(params)
        z = loc + torch.einsum("nij,snj->sni", self.scale_tril(params), eps)  # (S, N, D)
        log_q = gaussian.log_standard_normal(eps) - log_diag.sum(-1)
        kl = gaussian.kl_to_standard_normal(loc, log_diag) + 0.5 * off.square().sum(-1)
        return Draw(z, log_q, kl)

    def center(self, params: Tensor) -> Tensor:
        return self._parts(params)[0]

    def log_prob(self, params: Tensor, z: Tensor) -> Tensor:
        loc, log_diag, _ = self._parts(params)
        lower = self.scale_tril(params)  # (N, D, D)
        residual = (z - loc).permute(1, 2, 0)  # (N, D, S)
        eps = torch.linalg.solve_triangular(lower, residual, upper=False).permute(2, 0, 1)  # (S, N, D)
        return gaussian.log_standard_normal(eps) - log_diag.sum(-1)

    def gaussian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._parts(params)[0], self.scale_tril(params)

    def closest_to_gaussian(self, loc: Tensor, precision: Tensor) -> Tensor:
        """The Gaussian itself: L the Cholesky factor of precision^-1."""
        lower = torch.linalg.cholesky(torch.linalg.inv(precision))  # (D, D)
        rows, cols = torch.tril_indices(self.latent_dim, self.latent_dim, offset=-1, device=loc.device)
        row = torch.cat([lower.diagonal().log(), lower[rows, cols]])
        return torch.cat([loc, row.expand(loc.shape[0], -1)], dim=1)


@dataclass(frozen=True)
class PlanarFlow(Family):
    name: ClassVar[str] = "flow"
    num_layers: int = 10

    @property
    def layer_size(self) -> int:
        return 2 * self.latent_dim + 1  # u, w, b

    @property
    def num_params(self) -> int:
        return 2 * self.latent_dim + self.num_layers * self.layer_size

    @property
    def groups(self) -> dict[str, slice]:
        d = self.latent_dim
        return {"loc": slice(0, d), "log_scale": slice(d, 2 * d), "layers": slice(2 * d, self.num_params)}

    @classmethod
    def from_config(cls, latent_dim: int, inference: InferenceConfig) -> PlanarFlow:
        return cls(latent_dim, inference.flow.num_layers)

    def step_scales(self, device: torch.device | str = "cpu") -> Tensor:
        """The base at the row's step size, the layers' (u, w, b) at LAYER_STEP_SCALE of it: u and w
        act through their product, so an Adam step of the base's size in each moves a layer far
        (refined at the base's step size from the encoder's q, a flow ended below where it began)."""
        base = torch.ones(2 * self.latent_dim, device=device)
        layers = torch.full((self.num_layers * self.layer_size,), LAYER_STEP_SCALE, device=device)
        return torch.cat([base, layers])

    def prior(self, num_points: int, device: torch.device | str = "cpu") -> Tensor:
        """Base N(0, I) and u = b = 0 (every layer the identity); w fixed unit directions drawn
        once from a seeded generator, so that the gradient in u is not zero at the start."""
        d, k = self.latent_dim, self.num_layers
        w = torch.randn(k, d, generator=torch.Generator().manual_seed(0))
        w = w / w.norm(dim=1, keepdim=True)
        layers = torch.cat([torch.zeros(k, d), w, torch.zeros(k, 1)], dim=1)  # (K, 2D + 1)
        row = torch.cat([torch.zeros(2 * d), layers.flatten()])
        return row.to(device).expand(num_points, -1).clone()

    def _layers(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """u', w (each (N, K, D)) and b (N, K, 1), with u' = u + (m(w^T u) - w^T u) w / |w|^2,
        m(a) = softplus(a + SHIFT) - 1 >= -1, so that w^T u' >= -1 (Rezende & Mohamed 2015, App. A)."""
        d = self.latent_dim
        layers = params[..., 2 * d :].unflatten(-1, (self.num_layers, self.layer_size))
        u, w, b = layers[..., :d], layers[..., d : 2 * d], layers[..., 2 * d :]
        wu = (w * u).sum(-1, keepdim=True)  # (N, K, 1)
        u_hat = u + (F.softplus(wu + SHIFT) - 1.0 - wu) * w / (w.square().sum(-1, keepdim=True) + NORM_FLOOR)
        return u_hat, w, b

    def _flow(self, params: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """z_K (S, N, D) and sum_k log|det df_k/dz| (S, N) for base samples z (S, N, D)."""
        u_hat, w, b = self._layers(params)
        log_det = z.new_zeros(z.shape[:-1])
        for k in range(self.num_layers):
            a = (z * w[:, k]).sum(-1, keepdim=True) + b[:, k]  # (S, N, 1)
            h = torch.tanh(a)
            z = z + u_hat[:, k] * h
            slope = 1.0 - h.square()  # h'(a)
            log_det = log_det + torch.log(
                (1.0 + slope * (w[:, k] * u_hat[:, k]).sum(-1, keepdim=True)).abs()
            ).squeeze(-1)
        return z, log_det

    def draw(self, params: Tensor, eps: Tensor) -> Draw:
        d = self.latent_dim
        loc, log_scale = params[..., :d], params[..., d : 2 * d]
        base = loc + log_scale.exp() * eps  # (S, N, D)
        base_kl = gaussian.kl_to_standard_normal(loc, log_scale)  # (N,)
        log_q0 = gaussian.log_standard_normal(eps) - log_scale.sum(-1)
        if self.num_layers == 0:
            return Draw(base, log_q0, base_kl)
        z, log_det = self._flow(params, base)
        correction = gaussian.log_standard_normal(base) - gaussian.log_standard_normal(z) - log_det  # (S, N)
        return Draw(z, log_q0 - log_det, base_kl + correction)

    def center(self, params: Tensor) -> Tensor:
        loc = params[..., : self.latent_dim]
        return self._flow(params, loc[None])[0][0]


FAMILIES: dict[str, type[Family]] = {cls.name: cls for cls in (Diagonal, FullCovariance, PlanarFlow)}


def build_family(name: FamilyName | str, latent_dim: int, inference: InferenceConfig | None = None) -> Family:
    """The family called `name` for a latent size, with its settings from `inference`."""
    return FAMILIES[FamilyName(name).value].from_config(latent_dim, inference or InferenceConfig())
