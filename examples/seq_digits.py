"""Sequential digits: scikit-learn's bundled 8x8 digits read pixel by pixel as 64-step sequences.

    python examples/seq_digits.py [--quick] [--layer s4d|longconv|both] [--seed 0]

1797 images (no download), pixels scaled /16, one pixel per step (d_input = 1), a seeded
stratified 80/20 split. A SequenceModel (mean pooling) is trained with AdamW + cosine schedule;
prints the final test accuracy and the wall time per layer type.
"""

import argparse
import time

import kernelfuse
import torch
import torch.nn.functional as F
from kernelfuse.models import SequenceModel, accuracy, param_groups
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def run(layer, epochs, seed, d_model=64, n_layers=4):
    torch.manual_seed(seed)
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    to_seq = lambda a: torch.tensor(a, dtype=torch.float32).reshape(-1, 64, 1) / 16.0  # noqa: E731
    Xtr, Xte = to_seq(Xtr), to_seq(Xte)
    ytr, yte = torch.tensor(ytr), torch.tensor(yte)
    if layer == "s4d":
        kw = dict(d_state=64, init="s4d-lin", dt_min=1e-3, dt_max=1e-1)
        kernel_lr = 1e-3
    else:
        kw = dict(squash_lambda=1e-3, kernel_init_std=0.002, kernel_dropout=0.1)
        kernel_lr = 1e-3
    model = SequenceModel(1, d_model, n_layers, 10, layer=layer, l_max=64, dropout=0.1, pool="mean", layer_kwargs=kw)
    opt = torch.optim.AdamW(param_groups(model, 5e-3, kernel_lr, 0.05))
    bs = 64
    steps = epochs * ((len(Xtr) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[5e-3, kernel_lr], total_steps=steps, pct_start=0.1)
    t0 = time.time()
    g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        perm = torch.randperm(len(Xtr), generator=g)
        tot = 0.0
        for i in range(0, len(Xtr), bs):
            idx = perm[i : i + bs]
            loss = F.cross_entropy(model(Xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        if (ep + 1) % max(1, epochs // 5) == 0 or ep == epochs - 1:
            print(
                f"  [{layer}] epoch {ep + 1:3d}/{epochs}  train loss {tot / len(Xtr):.4f}  "
                f"test acc {accuracy(model, Xte, yte):.4f}  ({time.time() - t0:.0f} s)",
                flush=True,
            )
    acc = accuracy(model, Xte, yte)
    wall = time.time() - t0
    print(
        f"{layer}: final test accuracy {acc:.4f} ({len(Xte)} test images), wall time {wall:.1f} s "
        f"({sum(p.numel() for p in model.parameters())} parameters)",
        flush=True,
    )
    return acc, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few epochs (a smoke run, not the reported figure)")
    ap.add_argument("--layer", default="both", choices=["s4d", "longconv", "both"])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a loaded 2-core machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kernelfuse.set_num_threads(args.threads)
    epochs = args.epochs or (3 if args.quick else 30)
    layers = ["s4d", "longconv"] if args.layer == "both" else [args.layer]
    for layer in layers:
        run(layer, epochs, args.seed)


if __name__ == "__main__":
    main()
