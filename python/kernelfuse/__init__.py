"""kernelfuse: fused C++/CUDA kernels for PyTorch, registered as torch custom ops.

Import order matters: torch first (it loads its own OpenMP runtime, which the native module then
shares), then the native module ``_C`` (which registers ``torch.ops.kernelfuse.*``), then the
Python op wrappers (fake kernels and autograd).
"""

import torch  # noqa: F401  (must precede _C)

from . import (  # noqa: E402
    _C,  # noqa: E402
    butterfly,
    features,
    gp,
    kde,
    models,
    nn,
    ops,
    reference,
)
from .ops.butterfly import butterfly_multiply, monarch_fft, monarch_irfft, monarch_multiply, monarch_rfft  # noqa: E402
from .ops.features import fwht, random_features, structured_features  # noqa: E402
from .ops.kde import kernel_logsumexp, kernel_sum  # noqa: E402
from .ops.kron import kron_gp_mll, kron_matmul, kron_posterior, kron_solve  # noqa: E402
from .ops.kron_grid import grid_kernel  # noqa: E402
from .ops.longconv import fftconv  # noqa: E402
from .ops.longconv_ssm import ssm_kernel  # noqa: E402
from .ops.nngp import nngp_matmul  # noqa: E402

__version__ = _C.build_info()["version"]


def build_info() -> dict:
    """How this build was made: version, torch version built against, CUDA on/off and archs,
    OpenMP threads and the CPU vector ISA of the kernels."""
    info = dict(_C.build_info())
    info["torch_runtime_version"] = torch.__version__
    return info


def config() -> dict:
    """The environment switches as the native code read them (README.md, "Environment switches")."""
    return dict(_C.config())


def reload_config() -> None:
    """Read the environment switches again, e.g. after a test changed one (not while ops run)."""
    _C.reload_config()


get_num_threads = _C.get_num_threads
set_num_threads = _C.set_num_threads

__all__ = [
    # packages
    "butterfly",
    "features",
    "gp",
    "kde",
    "models",
    "nn",
    "ops",
    "reference",
    # ops
    "butterfly_multiply",
    "fftconv",
    "fwht",
    "grid_kernel",
    "kernel_logsumexp",
    "kernel_sum",
    "kron_gp_mll",
    "kron_matmul",
    "kron_posterior",
    "kron_solve",
    "monarch_fft",
    "monarch_irfft",
    "monarch_multiply",
    "monarch_rfft",
    "nngp_matmul",
    "random_features",
    "ssm_kernel",
    "structured_features",
    # build and threads
    "build_info",
    "config",
    "get_num_threads",
    "reload_config",
    "set_num_threads",
]
