"""Long-range recall: the label is the token at position 0, followed by L-1 noise/filler tokens.

    python examples/long_range.py [--quick] [--layer s4d|longconv|short|all] [--L 1024] [--seed 0]
                                  [--noise-tokens 1]

Each sequence is one-hot over V = 8 label tokens + M noise tokens: x[0] is a label token (the
class), x[1:] are i.i.d. tokens drawn from the M noise tokens, which carry no information about
the class (default M = 1: a filler token, as in the copy-memory benchmarks; M > 1 makes the
filler random, which needs more steps than the default budget). The model reads the sequence
causally and classifies from the LAST position (SequenceModel(pool="last")), so the information
has to travel L-1 = 1023 steps.

A model whose receptive field at the last position is shorter than L sees only filler there, so it
is at chance (1/V) by construction; "short" trains such a model to show it: the LongConv model
with every kernel truncated to its first 64 taps (2 layers -> receptive field 127 < L).
S4D and LongConv (full-length kernels) reach ~100%.

Fresh random batches every step (an endless training stream; batch 32, d_model 32, 2 layers);
test on a fixed held-out set of 512 sequences. Prints the final test accuracy and the wall time
per model.
"""

import argparse
import time

import kernelfuse
import torch
import torch.nn.functional as F
from kernelfuse.models import SequenceModel, accuracy, param_groups

KERNEL_PARAMS = ("log_dt", "log_A_real", "A_imag", "kernel")  # C keeps the default learning rate here


def make_batch(n, L, V, M, g):
    tok = V + torch.randint(0, M, (n, L), generator=g)
    y = torch.randint(0, V, (n,), generator=g)
    tok[:, 0] = y
    return F.one_hot(tok, V + M).float(), y


def run(kind, L, steps, seed, V=8, M=1, d_model=32, n_layers=2, bs=32, short_taps=64):
    torch.manual_seed(seed)
    g_test = torch.Generator().manual_seed(10_000 + seed)
    Xte, yte = make_batch(512, L, V, M, g_test)
    g = torch.Generator().manual_seed(seed)
    if kind == "s4d":
        layer, kw, klr = "s4d", dict(d_state=64, init="s4d-lin", dt_min=1e-4, dt_max=1e-1), 1e-3
    else:
        layer, kw, klr = "longconv", dict(squash_lambda=1e-3, kernel_init_std=0.002), 1e-2
    model = SequenceModel(V + M, d_model, n_layers, V, layer=layer, l_max=L, pool="last", layer_kwargs=kw)
    mask = None
    if kind == "short":
        mask = torch.zeros(L)
        mask[:short_taps] = 1
        with torch.no_grad():
            for blk in model.blocks:
                blk.layer.kernel.mul_(mask)
    lr = 1e-2
    opt = torch.optim.AdamW(param_groups(model, lr, klr, 0.01, KERNEL_PARAMS))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, klr], total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for step in range(steps):
        X, y = make_batch(bs, L, V, M, g)
        loss = F.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if mask is not None:
            with torch.no_grad():
                for blk in model.blocks:
                    blk.layer.kernel.mul_(mask)
        if (step + 1) % max(1, steps // 5) == 0:
            print(
                f"  [{kind}] step {step + 1:4d}/{steps}  loss {loss.item():.4f}  "
                f"test acc {accuracy(model, Xte, yte, batch_size=128):.4f}  ({time.time() - t0:.0f} s)",
                flush=True,
            )
    acc = accuracy(model, Xte, yte, batch_size=128)
    wall = time.time() - t0
    print(
        f"{kind}: L={L}, final test accuracy {acc:.4f} (chance {1 / V:.3f}, {len(Xte)} test sequences), "
        f"wall time {wall:.1f} s",
        flush=True,
    )
    return acc, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few steps (a smoke run, not the reported figure)")
    ap.add_argument("--layer", default="all", choices=["s4d", "longconv", "short", "all"])
    ap.add_argument("--L", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise-tokens", type=int, default=1, help="M, the number of distinct noise tokens")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a loaded 2-core machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kernelfuse.set_num_threads(args.threads)
    steps = args.steps or (20 if args.quick else 300)
    kinds = ["s4d", "longconv", "short"] if args.layer == "all" else [args.layer]
    for kind in kinds:
        run(kind, args.L, steps, args.seed, M=args.noise_tokens)


if __name__ == "__main__":
    main()
