#!/usr/bin/env python3
"""Check that every kernelfuse op has a CUDA kernel registered (no GPU needed).

The op list comes from two places, which must agree: the schemas in csrc/kernelfuse.cpp
(``m.def("name(...``) and the ops torch knows in the ``kernelfuse`` namespace after
``import kernelfuse``. For each op, asks the dispatcher whether a CUDA kernel is registered.
Exits 1, naming the ops, when an op has no CUDA kernel or the two lists differ; 0 otherwise.

Usage (in an environment with a CUDA build of kernelfuse installed):
    python scripts/check_cuda_registrations.py [--source csrc/kernelfuse.cpp]
Called by scripts/ci_cuda_build.sh.
"""

import argparse
import pathlib
import re
import sys

NAMESPACE = "kernelfuse"
DEFAULT_SOURCE = pathlib.Path(__file__).resolve().parent.parent / "csrc" / "kernelfuse.cpp"
# m.def("name(" or m.def("name.overload(", possibly with whitespace/newlines after "m.def(".
DEF_RE = re.compile(r'\bm\.def\(\s*"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)?)\s*\(')


def ops_from_source(path):
    text = path.read_text()
    # Drop // comments so a commented-out m.def does not count.
    text = re.sub(r"//[^\n]*", "", text)
    return DEF_RE.findall(text)


def ops_from_torch(torch):
    prefix = NAMESPACE + "::"
    return sorted({n[len(prefix) :] for n in torch._C._dispatch_get_all_op_names() if n.startswith(prefix)})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--source",
        type=pathlib.Path,
        default=DEFAULT_SOURCE,
        help="the file with TORCH_LIBRARY(kernelfuse, m) (default: %(default)s)",
    )
    args = ap.parse_args()

    import kernelfuse  # registers the schemas and kernels
    import torch

    info = kernelfuse.build_info()
    print(f"kernelfuse {info.get('version')} from {pathlib.Path(kernelfuse.__file__).parent}")
    print(
        f"  built against torch {info.get('torch_version')}, running torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}); build cuda={info.get('cuda')} archs={info.get('cuda_archs')}; "
        f"GPU present: {torch.cuda.is_available()}"
    )

    errors = []
    if not info.get("cuda"):
        errors.append("this kernelfuse build has no CUDA ops (build_info()['cuda'] is False)")
    src = ops_from_source(args.source)
    dup = sorted({n for n in src if src.count(n) > 1})
    if dup:
        errors.append(f"schemas defined more than once in {args.source}: {', '.join(dup)}")
    src_set, torch_set = set(src), set(ops_from_torch(torch))
    if not src_set:
        errors.append(f'no m.def("name(...") schemas found in {args.source}')
    if src_set - torch_set:
        errors.append(
            f"in {args.source.name} but unknown to torch after import: {', '.join(sorted(src_set - torch_set))}"
        )
    if torch_set - src_set:
        errors.append(f"registered with torch but not in {args.source.name}: {', '.join(sorted(torch_set - src_set))}")

    ops = sorted(src_set | torch_set)
    has = lambda op, key: torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{op}", key)  # noqa: E731
    rows = []
    for op in ops:
        known = op in torch_set
        rows.append((op, known and has(op, "CPU"), known and has(op, "CUDA"), known))
    w = max(len(op) for op in ops) if ops else 2
    print(f"\n  {'op':<{w}}  CPU  CUDA")
    for op, cpu, cuda, known in rows:
        mark = "" if cuda else ("   <-- MISSING CUDA KERNEL" if known else "   <-- NOT REGISTERED WITH TORCH")
        print(f"  {op:<{w}}  {'yes' if cpu else 'NO ':<3}  {'yes' if cuda else 'NO'}{mark}")
    missing = [op for op, _, cuda, _ in rows if not cuda]
    n_cuda = len(ops) - len(missing)
    print(
        f"\n{n_cuda}/{len(ops)} ops have a CUDA kernel "
        f"({len(src_set)} schemas in {args.source.name}, {len(torch_set)} ops in torch.ops.{NAMESPACE})"
    )
    if missing:
        errors.append(f"{len(missing)} op(s) without a CUDA kernel: {', '.join(missing)}")

    if errors:
        sys.stdout.flush()
        print("\nFAIL:", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print("OK: every kernelfuse op has a CUDA kernel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
