"""Evaluation: estimates of log p(x) and the inference gaps of a trained model.

`iwae` is the importance-weighted bound (Burda et al. 2016), `ais` annealed importance
sampling (Neal 2001); `gaps` splits log p(x) - L[q] into the approximation and the
amortization gap (Cremer, Li & Duvenaud 2018); `evaluate` runs that on a run folder.
"""
