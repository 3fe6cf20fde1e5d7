"""Inference: the evidence lower bound and how to maximize it over q.

`gaussian` holds diagonal-Gaussian algebra; `objectives` the ELBO as pure per-example
functions (Kingma & Welling 2014); `local_fit` and `refine` fit per-datapoint
q(z) by gradient steps (Hjelm et al. 2016; Krishnan et al. 2018); `estimators` the
reparameterization and score-function gradient estimators (Williams 1992; Kingma & Welling 2014).
"""
