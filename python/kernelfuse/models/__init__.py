"""Models built from kernelfuse.nn layers."""

from .sequence import LAYERS, SequenceModel
from .training import KERNEL_PARAMS, accuracy, param_groups

__all__ = ["KERNEL_PARAMS", "LAYERS", "SequenceModel", "accuracy", "param_groups"]
