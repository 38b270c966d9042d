"""Random inputs shared by the CPU tests (tests/test_*.py) and the CUDA-simulator tests
(tests/sim/test_sim_*.py), so both exercise the ops on the same distributions."""

import torch


def conv_taps(mode, Lk):
    """Kernel length of fftconv for Lk taps per direction."""
    return 2 * Lk if mode == "bidirectional" else Lk


def fftconv_inputs(
    B, H, L, Lk, mode="causal", dtype=torch.float64, kshape="shared", D=True, gates=True, seed=0, *, device="cpu"
):
    """(u, k, D, pregate, postgate) for fftconv: kshape "shared" (H, taps), "one" (1, H, taps) or
    "batch" (B, H, taps); k scaled by 1/sqrt(taps); absent D / gates as None."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    u = r(B, H, L)
    taps = conv_taps(mode, Lk)
    k = {"shared": lambda: r(H, taps), "one": lambda: r(1, H, taps), "batch": lambda: r(B, H, taps)}[kshape]()
    k = k / taps**0.5
    Dv = r(H) if D else None
    pre = r(B, H, L) if gates else None
    post = r(B, H, L) if gates else None
    cv = lambda t: None if t is None else t.to(dtype=dtype, device=device)  # noqa: E731
    return cv(u), cv(k), cv(Dv), cv(pre), cv(post)


def structured_inputs(d, nb, block, seed=0, dtype=torch.float64, P=None):
    """(signs, perm, P) of structured_features for nb blocks of size P (default: the power of two
    >= d): SORF (nb, 3, P) random signs; Fastfood (nb, 3, P) signs / Gaussian / scale rows and a
    random permutation per block."""
    g = torch.Generator().manual_seed(seed)
    if P is None:
        P = 1 << max(0, (d - 1).bit_length())
    if block == "sorf":
        signs = torch.randint(0, 2, (nb, 3, P), generator=g).double() * 2 - 1
        perm = None
    else:
        signs = torch.stack(
            (
                torch.randint(0, 2, (nb, P), generator=g).double() * 2 - 1,
                torch.randn(nb, P, generator=g, dtype=torch.float64),
                torch.rand(nb, P, generator=g, dtype=torch.float64) + 0.5,
            ),
            dim=1,
        )
        perm = torch.stack([torch.randperm(P, generator=g) for _ in range(nb)])
    return signs.to(dtype), perm, P
