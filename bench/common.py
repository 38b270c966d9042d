"""Benchmark helpers shared by bench_<family>.py: timing, peak extra memory, tables, machine info."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch


def _fix_malloc() -> None:
    """Make glibc return large blocks to the OS at once (fixed mmap threshold), so that resident
    memory shows every large temporary and peak-memory figures are comparable between rows."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (also disables the dynamic threshold)
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


_fix_malloc()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(
    fn: Callable[[], object], *, device: str = "cpu", warmup: int = 1, repeat: int = 5, max_seconds: float = 60.0
) -> float:
    """Median wall time (s) over `repeat` runs after `warmup` runs; stops early past max_seconds."""
    for _ in range(warmup):
        fn()
        sync(device)
    times: List[float] = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds:
            break
    return statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_memory(fn: Callable[[], object], *, device: str = "cpu") -> float:
    """Peak extra memory (bytes) while fn runs. CUDA: the allocator's peak over the baseline.
    CPU: resident-set size sampled every 0.2 ms, peak minus the level before the call (torch's
    CPU allocator returns large blocks to the OS, so the baseline is stable)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - base)
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0002)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    try:
        out = fn()
        del out
    finally:
        done.set()
        th.join()
    peak[0] = max(peak[0], _rss_bytes())
    return float(max(peak[0] - base, 0))


@dataclass
class Row:
    case: str
    impl: str
    seconds: float
    work: float  # units of work done in `seconds` (pairs, flops, ...)
    mem: Optional[float] = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.work / self.seconds


def fmt_count(n: int) -> str:
    """20000 -> '20k', 1500 -> '1.5k', 512 -> '512'."""
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return str(n)


def fmt_bytes(b: Optional[float]) -> str:
    if b is None:
        return "–"
    if b < 1 << 20:
        return f"{b / 1024:.0f} KiB"
    if b < 1 << 30:
        return f"{b / (1 << 20):.1f} MiB"
    return f"{b / (1 << 30):.2f} GiB"


def markdown_table(rows: List[Row], *, rate_name: str, rate_scale: float, baseline: str) -> str:
    """One table; speed ratios are against `baseline` rows of the same case (by work rate)."""
    out = [
        f"| case | implementation | median time | {rate_name} | speed vs {baseline} | peak extra memory | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    base = {r.case: r for r in rows if r.impl == baseline}
    for r in rows:
        b = base.get(r.case)
        ran = r.seconds == r.seconds and r.seconds != float("inf")  # NaN / inf: a row that was not run
        ratio = f"{r.rate / b.rate:.2f}x" if b and ran else "–"
        t = "–" if not ran else f"{r.seconds * 1e3:.1f} ms" if r.seconds < 1 else f"{r.seconds:.2f} s"
        rate = f"{r.rate / rate_scale:.3f}" if ran else "–"
        out.append(f"| {r.case} | {r.impl} | {t} | {rate} | {ratio} | {fmt_bytes(r.mem)} | {r.note} |")
    return "\n".join(out)


def machine_line(device: str = "cpu") -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import kernelfuse

    info = kernelfuse.build_info()
    gpu = f", GPU {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""
    return (
        f"{time.strftime('%Y-%m-%d')}, {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"kernelfuse {info['omp_threads']} OpenMP threads, ISA {info['cpu_isa']}){gpu}, torch {torch.__version__}, "
        f"kernelfuse {info['version']}"
    )


def bar_chart(rows: List[Row], path: str, panels) -> None:
    """Grouped log-scale bars, one panel per (value_of_row, y_label, title), cases on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r.case for r in rows))
    impls = list(dict.fromkeys(r.impl for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels) + 4 * (len(panels) == 1), 4.5), squeeze=False)
    wdt = 0.8 / len(impls)
    for ax, (value, ylabel, title) in zip(axes[0], panels):
        for j, impl in enumerate(impls):
            xs, ys = [], []
            for i, c in enumerate(cases):
                for r in rows:
                    if r.case == c and r.impl == impl:
                        xs.append(i + j * wdt)
                        ys.append(max(value(r), 1e-6))
            ax.bar(xs, ys, width=wdt, label=impl)
        ax.set_xticks([i + 0.4 - wdt / 2 for i in range(len(cases))])
        ax.set_xticklabels(cases, rotation=20, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_report(text: str, out: str, rows: List[Row], plot_path: str, panels) -> None:
    """Print the markdown section, write it to `out`, and draw the plot (skipped without matplotlib)."""
    print(text)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    try:
        bar_chart(rows, plot_path, panels)
    except ImportError:
        print("matplotlib not installed: no plot")
