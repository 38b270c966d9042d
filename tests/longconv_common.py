"""Shared by the fftconv tests of the long-convolution family (tests/test_longconv.py,
tests/test_longconv_conventions.py): the convolution modes."""

MODES = ["causal", "bidirectional", "circular"]
