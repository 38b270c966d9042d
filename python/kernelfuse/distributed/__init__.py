"""kernelfuse on several processes: exact sharded kernel sums and estimators on torch.distributed.

Launch with ``torchrun`` (or any ``torch.distributed.init_process_group``): gloo on CPU, NCCL
on GPU. See docs/distributed.md.

* :func:`kernel_sum`, :func:`kernel_logsumexp`, :func:`kernel_logsumexp_sq` -- the fused kernel
  sums with the points (and optionally the queries) sharded over the ranks; schedules "reduce",
  "local", "ring", "gather"; differentiable.
* :class:`KernelDensity`, :class:`GaussianKDE` -- the estimators fitted on sharded data.
* :class:`PrivateKernelDensity` -- the private sketch summed over the ranks, noised once.
* Random-feature ridge / GP regression: :class:`kernelfuse.features.RandomFeatureRidge` and
  :class:`kernelfuse.features.RandomFeatureGP` take ``group=`` (Gram and Phi^T y all-reduced).
"""

from ._comm import comm_stats
from ._estimators import GaussianKDE, KernelDensity, PrivateKernelDensity
from ._kernel_sums import SCHEDULES, choose_schedule, kernel_logsumexp, kernel_logsumexp_sq, kernel_sum

__all__ = [
    "SCHEDULES",
    "choose_schedule",
    "comm_stats",
    "kernel_sum",
    "kernel_logsumexp",
    "kernel_logsumexp_sq",
    "KernelDensity",
    "GaussianKDE",
    "PrivateKernelDensity",
]
