"""Models: the generative model p_theta(x | z) p(z) and the two posteriors q(z | x) over it.

`nets` holds the network pieces (MLP, conv trunks); `decoders` and `linear_gaussian` the
likelihoods; `encoders` the amortized q_phi(z | x) (Kingma & Welling 2014); `posteriors`
the amortized and the per-datapoint posterior behind one interface; `model` puts a decoder
and a posterior together.
"""
