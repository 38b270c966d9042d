"""Models built from kernelfuse.nn layers."""
from .sequence import LAYERS, SequenceModel

__all__ = ["LAYERS", "SequenceModel"]
