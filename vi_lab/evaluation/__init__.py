"""Evaluation: estimates of log p(x) and the inference gaps of a trained model.

`iwae` is the importance-weighted bound (Burda et al. 2016), `ais` annealed importance
sampling (Neal 2001); `gaps` splits log p(x) - L[q] into the approximation and the
amortization gap (Cremer, Li & Duvenaud 2018); `validation` is that measure as a training
run takes it; `evaluate` runs it on a run folder.
"""
