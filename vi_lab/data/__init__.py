"""Data: the observed x, as tensors on the device, and minibatches that carry example indices.

`fashion_mnist` finds, checks and reads the Fashion-MNIST files (Xiao et al. 2017);
`datasets` splits them (and the synthetic linear-Gaussian data) into train/valid/test.
Nothing here knows about models or inference.
"""
