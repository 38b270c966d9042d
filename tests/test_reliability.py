"""Issue 13 (reliability): its one-line repros as the issue writes them, across the families. Each
class is covered in depth by the families' own tests: tests/test_kron_reliability.py (+ _sweep),
tests/test_kde_reliability.py, tests/test_butterfly_reliability.py, tests/test_features_reliability.py,
tests/test_longconv_reliability.py.
"""

import kernelfuse as kf
import pytest
import torch


def test_issue13_one_line_repros_as_written():
    """Each one-line repro of issue 13, as the issue writes it, with the fixed behaviour (the
    families' tests cover each class in depth: tests/test_*_reliability.py)."""
    # 1: a meta tensor mixed with CPU ones is an error naming it
    with pytest.raises(ValueError, match=r"argument 'W'.*meta"):
        kf.random_features(torch.randn(5, 3), torch.randn(3, 7, device="meta"))
    # 2: a NaN point is a NaN row (the direct path), not a Toeplitz row
    x = torch.linspace(0, 1, 9, dtype=torch.float64)
    x[4] = float("nan")
    assert torch.isnan(kf.grid_kernel(x, x, "rbf", torch.zeros(1, 2, dtype=torch.float64))[4]).all()
    # 3: NaN in, NaN out
    assert torch.isnan(kf.kernel_logsumexp(torch.tensor([[float("nan")]]), torch.zeros(3, 1))).all()
    # 4: backward with only some inputs requiring grad
    x = torch.randn(1, 2, requires_grad=True)
    kf.kron_matmul([torch.randn(2, 2)], x).sum().backward()
    assert x.grad.shape == (1, 2)
    # 5: empty in, correctly shaped result out
    assert kf.random_features(torch.randn(5, 0), torch.randn(0, 7)).shape == (5, 7)
    # 6: the DFT / twiddle cache stays bounded over distinct lengths n = 2...2021 (every 9th here, dense
    # prime-size DFTs included; a table above the cap is used for its call only)
    from kernelfuse import butterfly as kfb

    prev = kfb.set_monarch_fft_cache_limit(8 * 2**20)
    try:
        for n in range(2, 2022, 9):
            kf.monarch_fft(torch.randn(1, n, dtype=torch.complex64))
            assert kfb.monarch_fft_cache_info()["bytes"] <= 2 * 8 * 2**20
        xp = torch.randn(2, 2017, dtype=torch.complex128)  # prime: a 2017 x 2017 dense DFT, over the cap
        torch.testing.assert_close(kf.monarch_fft(xp), torch.fft.fft(xp))
    finally:
        kfb.set_monarch_fft_cache_limit(prev)
        kfb.clear_monarch_fft_cache()
    # 7: a storage offset
    xo = torch.randn(17)[1:]
    torch.testing.assert_close(kf.monarch_rfft(xo), torch.fft.rfft(xo))
