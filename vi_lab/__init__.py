"""vi_lab: one decoder trained by amortized, semi-amortized or per-datapoint inference, and their gaps.

Subpackages, one concept each, from the ground up: `data` (the observed x), `inference`
(the ELBO and fitting q), `models` (decoders, encoders, the two posteriors), `runs`
(run-folder I/O), `evaluation` (log p(x) and the gaps); then `train.py` (the training loop),
`uses` (what a trained run is for), `study` (Optuna searches) and `cli.py`. Each imports
only from the ones before it.
"""

__version__ = "0.1.0"
