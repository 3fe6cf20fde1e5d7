"""Data: the observed x, as tensors on the device, and minibatches that carry example indices.

`source` finds, checks (official checksums) and downloads a dataset's files; one module per
dataset gives its files and reader (`fashion_mnist`, `mnist`, `binarized_mnist`, `omniglot`,
`cifar10`, `npz`; `idx` is the IDX format they share); `datasets` holds the registry and turns
what a reader returns (and the synthetic linear-Gaussian data) into binarized train/valid/test
splits. Nothing here knows about models or inference.
"""
