"""Uses: what a trained run is for, beyond its gaps.

`sample` draws from p_theta(x); `anomaly` scores points by log p(x) and the ELBO;
`impute` fills missing pixels by refining q against the observed ones; `embed` writes
the posterior means for TensorBoard's projector; `gradvar` measures the variance of the
reparameterization and score-function gradient estimators on a run's points.
"""
