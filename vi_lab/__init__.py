"""vi_lab: one decoder, trained by amortized or per-datapoint inference, and the gaps between them."""

__version__ = "0.1.0"
