"""How a run's step size and KL weight vary over its decoder steps.

KL warm-up (the KL cost annealing of Bowman et al. 2016; the warm-up of Sønderby et al.
2016) multiplies the KL term of the training objective by beta, linear from 0 to 1; the
cosine schedule is SGDR's annealing without restarts (Loshchilov & Hutter 2017, Eq. 5).
"""

from __future__ import annotations

import math

from vi_lab.config import LRSchedule, TrainConfig


def kl_weight(train: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """beta of KL warm-up at a decoder step: linear from 0 to 1 over `kl_warmup_epochs`."""
    if train.kl_warmup_epochs == 0:
        return 1.0
    return min(1.0, step / (train.kl_warmup_epochs * steps_per_epoch))


def learning_rate(train: TrainConfig, step: int, total_steps: int) -> float:
    """The decoder's (and encoder's) learning rate at a step: constant, or cosine to lr_min."""
    if train.lr_schedule == LRSchedule.constant:
        return train.lr
    progress = min(1.0, step / max(total_steps, 1))
    return train.lr_min + 0.5 * (train.lr - train.lr_min) * (1.0 + math.cos(math.pi * progress))
