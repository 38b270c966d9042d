"""Long-convolution sequence layers built on ``kernelfuse.fftconv`` and ``kernelfuse.ssm_kernel``.

Layout: every module here takes and returns ``(batch, length, d_model)`` tensors (like
``nn.Linear``-style sequence layers); pass ``transposed=True`` to use ``(batch, d_model, length)``,
the layout of the ops, and skip the two transposes.

- :class:`LongConv`: explicitly parametrised long kernels with the Squash (soft threshold) and
  Smooth (average pool) regularisers of Fu et al. 2023 ("Simple Hardware-Efficient Long
  Convolutions for Sequence Modeling").
- :class:`S4D`: diagonal state-space layer (Gu et al. 2022, "On the Parameterization and
  Initialization of Diagonal State Space Models"), convolutional mode plus a recurrent ``step``.
- :class:`GatedLongConv`: H3/Hyena-style gated long convolution using fftconv's fused gates
  (D on the gated input, as H3 and Hyena, by default).

Conventions and their mapping to safari / H3 / Hyena: docs/longconv_models.md.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.longconv import fftconv
from ..ops.longconv_ssm import ssm_kernel

__all__ = ["LongConv", "S4D", "GatedLongConv", "squash", "smooth", "s4d_init", "REG_ORDERS"]

# Order of LongConv's kernel regularisers: "smooth_squash" (safari's LongConvKernel: Smooth, then
# Squash, then kernel dropout) or "squash_smooth" (this library's order before issue 12: kernel
# dropout, Squash, then Smooth).
REG_ORDERS = ("smooth_squash", "squash_smooth")


# ---------------------------------------------------------------- regularisers
def squash(k: torch.Tensor, lam: float) -> torch.Tensor:
    """Soft threshold ``sign(k) * relu(|k| - lam)`` (Squash)."""
    if lam <= 0:
        return k
    return torch.sign(k) * F.relu(k.abs() - lam)


def smooth(k: torch.Tensor, window: Optional[int]) -> torch.Tensor:
    """Average pool over ``window`` taps along the last dim (Smooth): stride 1, zero padding of
    ``window // 2`` on both sides (counted in the mean), cropped back to the input length. So
    ``out[l] = (1/window) * sum_{j=-(window//2)}^{window - 1 - window//2} k[l + j]``, k = 0 outside."""
    if window is None or window <= 1:
        return k
    shape = k.shape
    x = k.reshape(-1, 1, shape[-1])
    x = F.avg_pool1d(x, window, stride=1, padding=window // 2, count_include_pad=True)
    return x[..., : shape[-1]].reshape(shape)


def _to_ops_layout(u: torch.Tensor, transposed: bool) -> torch.Tensor:
    return u if transposed else u.transpose(1, 2)


def _from_ops_layout(y: torch.Tensor, transposed: bool) -> torch.Tensor:
    return y if transposed else y.transpose(1, 2)


# ---------------------------------------------------------------- LongConv
class LongConv(nn.Module):
    """Learned long convolution ``y = conv(u, K) + D u`` with one explicit kernel per channel.

    Args:
        d_model: H, the channel count.
        l_max: kernel length (the longest input it covers; shorter inputs use the first L taps).
        channels: kernels per channel; with channels > 1 the outputs of the channels*H
            convolutions are mixed back to H by a Linear(channels*H -> H).
        bidirectional: also convolve with the future (fftconv's "bidirectional" mode); the kernel
            then has 2 * l_max taps (forward taps, then backward taps).
        reverse: bidirectional tap convention (fftconv's ``reverse``): "safari" (default; backward
            tap j multiplies u[t + 1 + j], safari's LongConv) or "h3" (u[t + j], H3's k_rev).
        squash_lambda: soft-threshold level of the Squash regulariser (0 disables it).
        smooth_window: width of the Smooth average pool (None or 1 disables it).
        reg_order: "smooth_squash" (default, safari's order: Smooth, Squash, kernel dropout) or
            "squash_smooth" (kernel dropout, Squash, Smooth: this layer's order before issue 12).
        kernel_dropout: dropout on the kernel entries (training only).
        transposed: inputs (B, H, L) instead of (B, L, H).
        fft: "fixed" (default): the exact FFT convolution ``kernelfuse.fftconv``. "learned":
            FlashButterfly's learned extension (Fu et al. 2023): the convolution runs through
            Monarch factors of size n = 2^ceil(log2 2 l_max) (forward: ``fft_w1``, ``fft_w2``;
            inverse: ``ifft_w1``, ``ifft_w2``, complex parameters) initialised to the exact DFT
            and inverse DFT (``kernelfuse.butterfly.monarch_dft_factors``) and trained with the
            kernel: y = Re(IF(F(pad(u)) * F(pad(k))))[:L] + D u, which at initialisation equals
            the causal convolution. Not available with ``bidirectional=True``.

    The kernel regularisers run in ``reg_order``; Smooth pools each half of a bidirectional kernel
    separately (safari's two directions are separate kernel channels). Parameters: ``kernel`` (channels*H, [2*]l_max) initialised
    ``randn * kernel_init_std``, and ``D`` (channels*H,).
    """

    def __init__(
        self,
        d_model: int,
        l_max: int,
        *,
        channels: int = 1,
        bidirectional: bool = False,
        squash_lambda: float = 0.003,
        smooth_window: Optional[int] = None,
        kernel_dropout: float = 0.0,
        kernel_init_std: float = 0.002,
        transposed: bool = False,
        fft: str = "fixed",
        reg_order: str = "smooth_squash",
        reverse: str = "safari",
    ):
        super().__init__()
        if reg_order not in REG_ORDERS:
            raise ValueError(
                f"kernelfuse.nn.LongConv: argument 'reg_order': expected one of {', '.join(REG_ORDERS)}, got {reg_order!r}"
            )
        if reverse not in ("safari", "h3"):
            raise ValueError(f"kernelfuse.nn.LongConv: argument 'reverse': expected 'safari' or 'h3', got {reverse!r}")
        self.d_model, self.l_max, self.channels = d_model, l_max, channels
        self.bidirectional, self.reg_order, self.reverse = bidirectional, reg_order, reverse
        self.squash_lambda, self.smooth_window = squash_lambda, smooth_window
        self.transposed = transposed
        taps = 2 * l_max if bidirectional else l_max
        self.kernel = nn.Parameter(torch.randn(channels * d_model, taps) * kernel_init_std)
        self.D = nn.Parameter(torch.randn(channels * d_model))
        self.kernel_dropout = nn.Dropout(kernel_dropout) if kernel_dropout > 0 else nn.Identity()
        self.output_linear = nn.Linear(channels * d_model, d_model) if channels > 1 else None
        if fft not in ("fixed", "learned"):
            raise ValueError(f"kernelfuse.nn.LongConv: argument 'fft': expected 'fixed' or 'learned', got {fft!r}")
        self.fft = fft
        if fft == "learned":
            if bidirectional:
                raise ValueError(
                    "kernelfuse.nn.LongConv: fft='learned' supports causal kernels only (bidirectional=False)"
                )
            from ..butterfly import monarch_dft_factors

            n = 1
            while n < 2 * l_max:
                n *= 2
            self.fft_size = n
            w1, w2, pin, pout = monarch_dft_factors(n, dtype=torch.complex64)
            iw1, iw2, ipin, ipout = monarch_dft_factors(n, inverse=True, dtype=torch.complex64)
            self.fft_w1, self.fft_w2 = nn.Parameter(w1), nn.Parameter(w2)
            self.ifft_w1, self.ifft_w2 = nn.Parameter(iw1), nn.Parameter(iw2)
            self.register_buffer("fft_perm_in", pin)
            self.register_buffer("fft_perm_out", pout)

    def _smooth(self, k: torch.Tensor) -> torch.Tensor:
        if self.bidirectional:  # each direction separately
            return smooth(k.reshape(k.shape[0], 2, self.l_max), self.smooth_window).reshape(k.shape[0], -1)
        return smooth(k, self.smooth_window)

    def regularised_kernel(self) -> torch.Tensor:
        """The kernel after the regularisers in ``reg_order``: (channels*H, [2*]l_max).
        "smooth_squash": dropout(squash(smooth(k))); "squash_smooth": smooth(squash(dropout(k)))."""
        if self.reg_order == "smooth_squash":
            return self.kernel_dropout(squash(self._smooth(self.kernel), self.squash_lambda))
        return self._smooth(squash(self.kernel_dropout(self.kernel), self.squash_lambda))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = _to_ops_layout(u, self.transposed)  # (B, H, L)
        L = u.shape[-1]
        if L > self.l_max:
            raise ValueError(f"kernelfuse.nn.LongConv: input length {L} exceeds l_max={self.l_max}")
        k = self.regularised_kernel()
        if self.channels > 1:
            u = u.repeat(1, self.channels, 1)  # index c*H + h
        if self.fft == "learned":
            y = self._learned_conv(u, k[:, :L])
        elif self.bidirectional:
            kk = (k[:, :L], k[:, self.l_max : self.l_max + L])
            y = fftconv(u, kk, self.D, mode="bidirectional", reverse=self.reverse)
        else:
            y = fftconv(u, k[:, :L], self.D, mode="causal")
        if self.output_linear is not None:
            y = self.output_linear(y.transpose(1, 2)).transpose(1, 2)
        return _from_ops_layout(y, self.transposed)

    def _learned_transform(self, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        from ..ops.butterfly import monarch_multiply

        return monarch_multiply(x[..., self.fft_perm_in], w1, w2)[..., self.fft_perm_out]

    def _learned_conv(self, u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Causal convolution through the learned Monarch DFT factors (u (B, H', L), k (H', L))."""
        L, n = u.shape[-1], self.fft_size
        cdt = self.fft_w1.dtype
        uf = self._learned_transform(F.pad(u, (0, n - L)).to(cdt), self.fft_w1, self.fft_w2)
        kf = self._learned_transform(F.pad(k, (0, n - L)).to(cdt), self.fft_w1, self.fft_w2)
        y = self._learned_transform(uf * kf, self.ifft_w1, self.ifft_w2).real[..., :L].to(u.dtype)
        return y + self.D[:, None] * u


# ---------------------------------------------------------------- S4D
S4D_INITS = ("s4d-lin", "s4d-inv", "s4d-legs", "s4d-real")


def s4d_init(init: str, H: int, N2: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(A_real, A_imag) of shape (H, N2) for the S4D initialisations (Gu et al. 2022), N = 2 * N2.

    s4d-lin: A = -1/2 + i pi n; s4d-inv: A = -1/2 + i N/pi (N/(2n+1) - 1); s4d-real: A = -(n+1);
    s4d-legs: the eigenvalues (positive imaginary part, ascending) of the normal part of HiPPO-LegS
    of size N, A_normal = -1/2 I + S with S skew (computed with torch.linalg.eigvals in float64).
    """
    n = torch.arange(N2, dtype=torch.float64)
    N = 2 * N2
    if init == "s4d-lin":
        re, im = torch.full((N2,), -0.5, dtype=torch.float64), math.pi * n
    elif init == "s4d-inv":
        re, im = torch.full((N2,), -0.5, dtype=torch.float64), N / math.pi * (N / (2 * n + 1) - 1)
    elif init == "s4d-real":
        re, im = -(n + 1), torch.zeros(N2, dtype=torch.float64)
    elif init == "s4d-legs":
        q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
        # HiPPO-LegS A[n,k] = -q_n q_k (n > k), -(n+1) (n = k), 0 (n < k); + P P^T, P_n = q_n / sqrt 2.
        A = -torch.tril(q[:, None] * q[None, :], -1) - torch.diag(torch.arange(N, dtype=torch.float64) + 1)
        A_normal = A + 0.5 * q[:, None] * q[None, :]
        ev = torch.linalg.eigvals(A_normal)
        ev = ev[ev.imag > 0]
        ev = ev[torch.argsort(ev.imag)][:N2]
        if ev.numel() < N2:  # N odd-sized edge cases: pad with the last pole
            ev = torch.cat([ev, ev[-1:].expand(N2 - ev.numel())])
        re, im = ev.real.clamp(max=-1e-4), ev.imag
    else:
        raise ValueError(f"kernelfuse.nn.S4D: unknown init {init!r}; expected one of: {', '.join(S4D_INITS)}")
    return re.expand(H, N2).clone(), im.expand(H, N2).clone()


class S4D(nn.Module):
    """Diagonal state-space layer ``x' = A x + B u, y = C x + D u`` (B folded into C, B = 1).

    Args:
        d_model: H, the channel count (one independent SSM per channel).
        d_state: N; the layer keeps N/2 complex modes (their conjugates are implicit, hence the
            ``2 Re`` in the kernel).
        init: "s4d-lin", "s4d-inv", "s4d-legs" or "s4d-real" (see :func:`s4d_init`).
        discretization: "zoh" or "bilinear".
        dt_min, dt_max: log-uniform range of the initial step sizes.
        bidirectional: two kernels (forward and backward, separate C), fftconv's bidirectional mode.
        reverse: bidirectional tap convention, "safari" (default, S4/S4D in safari) or "h3" (H3's
            k_rev); see fftconv's ``reverse``.
        transposed: inputs (B, H, L) instead of (B, L, H).

    Parameters: ``log_dt`` (H,), ``log_A_real`` (H, N/2) storing log(-A_real), ``A_imag`` (H, N/2),
    ``C`` (H', N/2, 2) real view of complex C (H' = 2H when bidirectional), ``D`` (H,).
    Convolutional mode: K = ssm_kernel(...), y = fftconv(u, K, D). Recurrent mode: :meth:`step`.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        init: str = "s4d-lin",
        discretization: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        transposed: bool = False,
        reverse: str = "safari",
    ):
        super().__init__()
        if reverse not in ("safari", "h3"):
            raise ValueError(f"kernelfuse.nn.S4D: argument 'reverse': expected 'safari' or 'h3', got {reverse!r}")
        self.reverse = reverse
        if d_state < 2 or d_state % 2:
            raise ValueError(f"kernelfuse.nn.S4D: d_state must be an even number >= 2, got {d_state}")
        H, N2 = d_model, d_state // 2
        self.d_model, self.d_state, self.discretization = d_model, d_state, discretization
        self.bidirectional, self.transposed = bidirectional, transposed
        log_dt = torch.rand(H, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        A_re, A_im = s4d_init(init, H, N2)
        self.log_dt = nn.Parameter(log_dt.float())
        self.log_A_real = nn.Parameter(torch.log(-A_re).float())
        self.A_imag = nn.Parameter(A_im.float())
        nk = 2 if bidirectional else 1
        C = torch.randn(nk * H, N2, dtype=torch.complex64) * math.sqrt(0.5)
        self.C = nn.Parameter(torch.view_as_real(C).clone())
        self.D = nn.Parameter(torch.randn(H))

    # -- helpers
    def _A(self):
        return -torch.exp(self.log_A_real), self.A_imag

    def kernel(self, L: int) -> torch.Tensor:
        """(H, L) causal kernel, or (2H, L) [forward; backward] when bidirectional."""
        A_re, A_im = self._A()
        C = torch.view_as_complex(self.C)
        log_dt = self.log_dt
        if self.bidirectional:
            log_dt, A_re, A_im = log_dt.repeat(2), A_re.repeat(2, 1), A_im.repeat(2, 1)
        return ssm_kernel(log_dt, A_re, A_im, None, C, L, discretization=self.discretization)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = _to_ops_layout(u, self.transposed)
        L = u.shape[-1]
        K = self.kernel(L)
        if self.bidirectional:
            H = self.d_model
            y = fftconv(u, (K[:H], K[H:]), self.D, mode="bidirectional", reverse=self.reverse)
        else:
            y = fftconv(u, K, self.D, mode="causal")
        return _from_ops_layout(y, self.transposed)

    # -- recurrent mode
    def default_state(self, batch: int, *, device=None, dtype=None) -> torch.Tensor:
        """Zero state (batch, H, N/2), complex (complex64 for float32 parameters)."""
        ref = self.log_dt
        cdt = torch.complex128 if (dtype or ref.dtype) == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_model, self.d_state // 2, dtype=cdt, device=device or ref.device)

    def discretized(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(Abar, Bbar), complex (H, N/2), with the same formulas as ``ssm_kernel`` (B = 1)."""
        A_re, A_im = self._A()
        A = torch.complex(A_re, A_im)
        dtA = torch.exp(self.log_dt)[:, None] * A
        if self.discretization == "zoh":
            Abar = torch.exp(dtA)
            Bbar = (Abar - 1) / A
        else:
            Abar = (1 + dtA / 2) / (1 - dtA / 2)
            Bbar = torch.exp(self.log_dt)[:, None] / (1 - dtA / 2)
        return Abar, Bbar

    def step(self, u_t: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step: u_t (batch, H), state (batch, H, N/2) -> (y_t (batch, H), new state).

        x_t = Abar x_{t-1} + Bbar u_t, y_t = 2 Re(sum_n C_n x_t[n]) + D u_t. Causal only."""
        if self.bidirectional:
            raise RuntimeError("kernelfuse.nn.S4D.step: the bidirectional layer has no recurrent mode")
        Abar, Bbar = self.discretized()
        C = torch.view_as_complex(self.C)
        state = Abar * state + Bbar * u_t[..., None].to(state.dtype)
        y = 2 * (C * state).sum(-1).real + self.D * u_t
        return y.to(u_t.dtype), state


# ---------------------------------------------------------------- GatedLongConv
class GatedLongConv(nn.Module):
    """H3/Hyena-style gated long convolution (order 2).

    q, k, v = split(in_proj(u)) (Linear H -> 3H); each passes a short causal depthwise conv
    (kernel ``short_kernel`` = 3); then, with ``skip="gated"`` (default, H3's ``fftconv_h3_ref``
    at head_dim 1 and Hyena's order-2 operator: D multiplies the gated input)
    ``y = q * (longconv(k * v) + D * (k * v))``, or with ``skip="input"`` (this layer before
    issue 12) ``y = q * (longconv(k * v) + D * v)``; one fused
    ``fftconv(v, K, D, pregate=k, postgate=q, skip=skip)``; output ``out_proj(y)`` (Linear H -> H).
    The long kernel is LongConv's (explicit, Squash/Smooth regularised, ``reg_order`` as there).
    """

    def __init__(
        self,
        d_model: int,
        l_max: int,
        *,
        short_kernel: int = 3,
        squash_lambda: float = 0.003,
        smooth_window: Optional[int] = None,
        kernel_dropout: float = 0.0,
        kernel_init_std: float = 0.002,
        transposed: bool = False,
        skip: str = "gated",
        reg_order: str = "smooth_squash",
    ):
        super().__init__()
        if skip not in ("input", "gated"):
            raise ValueError(f"kernelfuse.nn.GatedLongConv: argument 'skip': expected 'input' or 'gated', got {skip!r}")
        self.d_model, self.l_max, self.transposed, self.skip = d_model, l_max, transposed, skip
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short_conv = nn.Conv1d(
            3 * d_model, 3 * d_model, short_kernel, groups=3 * d_model, padding=short_kernel - 1
        )
        self.long = LongConv(
            d_model,
            l_max,
            squash_lambda=squash_lambda,
            smooth_window=smooth_window,
            kernel_dropout=kernel_dropout,
            kernel_init_std=kernel_init_std,
            transposed=True,
            reg_order=reg_order,
        )
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            u = u.transpose(1, 2)
        L = u.shape[1]
        if L > self.l_max:
            raise ValueError(f"kernelfuse.nn.GatedLongConv: input length {L} exceeds l_max={self.l_max}")
        z = self.in_proj(u).transpose(1, 2)  # (B, 3H, L)
        z = self.short_conv(z)[..., :L]  # causal: keep the first L outputs
        q, k, v = z.chunk(3, dim=1)
        K = self.long.regularised_kernel()[:, :L]
        y = fftconv(
            v.contiguous(),
            K,
            self.long.D,
            pregate=k.contiguous(),
            postgate=q.contiguous(),
            mode="causal",
            skip=self.skip,
        )
        y = self.out_proj(y.transpose(1, 2))
        return y.transpose(1, 2) if self.transposed else y
