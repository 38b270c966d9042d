"""Small training helpers shared by the examples and by users of the sequence models."""

from __future__ import annotations

from typing import Iterable, List

import torch

#: Names (last component) of the SSM / long-kernel parameters of kernelfuse.nn layers.
KERNEL_PARAMS = ("log_dt", "log_A_real", "A_imag", "C", "kernel")


def param_groups(
    model: torch.nn.Module,
    lr: float,
    kernel_lr: float,
    weight_decay: float,
    kernel_params: Iterable[str] = KERNEL_PARAMS,
) -> List[dict]:
    """Optimizer groups: SSM / long-kernel parameters get their own learning rate and no weight
    decay (the S4 / Safari recipe); everything else gets `lr` and `weight_decay`."""
    names = set(kernel_params)
    ker, rest = [], []
    for n, p in model.named_parameters():
        (ker if n.split(".")[-1] in names else rest).append(p)
    return [dict(params=rest, lr=lr, weight_decay=weight_decay), dict(params=ker, lr=kernel_lr, weight_decay=0.0)]


def accuracy(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Classification accuracy of `model` on (X, y), evaluated in eval mode without gradients."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(X[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum().item()
            for i in range(0, len(X), batch_size)
        )
    model.train(was_training)
    return correct / max(len(X), 1)
