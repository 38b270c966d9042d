#!/usr/bin/env bash
# CI step: the CUDA build against a CUDA torch, on a machine without a GPU. Called by .ci/run.
#  1. a virtual environment outside the clone (cached between runs on this machine; re-created
#     when broken or when what it should hold changes) with torch==2.14.1 (a CUDA 13 build),
#     installed from the local package disk only (pip's file:// indexes and find-links), and the
#     build dependencies;
#  2. kernelfuse built with KERNELFUSE_CUDA=ON for $KERNELFUSE_CUDA_ARCHS (default 90a), in a
#     persistent build directory under the cache (incremental reruns);
#  3. scripts/check_cuda_registrations.py: every op in csrc/kernelfuse.cpp has a CUDA kernel.
# Exits non-zero on any failure. Skips (exit 0, saying why) only when there is no nvcc or
# torch==2.14.1 cannot be installed from the local package disk.
# Knobs: KERNELFUSE_CUDA_CACHE (default ~/.cache/kernelfuse), KERNELFUSE_CUDA_VENV,
# KERNELFUSE_CUDA_ARCHS, KERNELFUSE_CUDA_CLEAN=1 (build from scratch), KERNELFUSE_CUDA_PIP_ARGS
# (replaces the local-disk package sources, e.g. "" to use pip as configured), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

TORCH_WANT=2.14.1  # a CUDA 13 build
TORCH_SPEC="torch==$TORCH_WANT"
BUILD_DEPS=("scikit-build-core>=0.10" "pybind11>=2.12" ninja numpy)
CACHE=${KERNELFUSE_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kernelfuse}
VENV=${KERNELFUSE_CUDA_VENV:-$CACHE/venv-cuda-torch$TORCH_WANT}
ARCHS=${KERNELFUSE_CUDA_ARCHS:-90a}
PYTHON=${PYTHON:-python3}
PY=$VENV/bin/python
STAMP=$VENV/.kernelfuse-ci-stamp
LOGDIR=$CACHE/logs
PIPQ=(--quiet --progress-bar off --no-compile --disable-pip-version-check)

# ---- timings: one line per phase, and a summary on exit (also on failure) ----
T_START=$EPOCHREALTIME
T_PHASE=$T_START
TIMINGS=()
since() { awk -v now="$EPOCHREALTIME" -v t="$1" 'BEGIN { printf "%.1f", now - t }'; }
phase_done() { TIMINGS+=("$(printf '  %-36s %7s s' "$1" "$(since "$T_PHASE")")"); echo "ci_cuda_build: $1: $(since "$T_PHASE") s"; T_PHASE=$EPOCHREALTIME; }
summary() {
  local rc=$?
  echo "---- ci_cuda_build timings ----"
  ((${#TIMINGS[@]})) && printf '%s\n' "${TIMINGS[@]}"
  printf '  %-36s %7s s (exit %d)\n' "total" "$(since "$T_START")" "$rc"
}
trap summary EXIT
# pip, minus the noise of a file:// index that lacks a project ("Location ... is ignored").
pip_() {
  local py=$1 rc=0 err; shift
  err=$(mktemp)
  "$py" -m pip "$@" 2>"$err" || rc=$?
  grep -v 'is ignored: it is neither a file nor a directory' "$err" >&2 || true
  rm -f "$err"
  return "$rc"
}
skip() { echo "ci_cuda_build: SKIPPED: $*"; exit 0; }
die() { echo "ci_cuda_build: FAILED: $*" >&2; exit 1; }

# ---- nvcc ----
NVCC=${CUDACXX:-$(command -v nvcc || true)}
if [[ -z $NVCC && -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc; fi
[[ -n $NVCC && -x $NVCC ]] || skip "no nvcc (CUDACXX=${CUDACXX:-unset}, none on PATH, none at /usr/local/cuda/bin/nvcc)"
export CUDACXX=$NVCC PATH="$(dirname "$NVCC"):$PATH"
NVCC_VERSION=$("$NVCC" --version | tail -1)
echo "ci_cuda_build: nvcc $NVCC ($NVCC_VERSION); cache $CACHE; venv $VENV; archs $ARCHS; $(nproc) cores"

mkdir -p "$CACHE" "$LOGDIR"
exec 9>"$CACHE/.lock"
flock -w 3600 9 || die "could not lock $CACHE/.lock (another run holds it)"

# ---- package sources: the local disk only (file:// indexes and local find-links from pip's config) ----
if [[ -v KERNELFUSE_CUDA_PIP_ARGS ]]; then
  read -ra SRC <<<"$KERNELFUSE_CUDA_PIP_ARGS"
else
  idx="${PIP_INDEX_URL:-$("$PYTHON" -m pip config get global.index-url 2>/dev/null || true)}"
  idx+=" ${PIP_EXTRA_INDEX_URL:-$("$PYTHON" -m pip config get global.extra-index-url 2>/dev/null || true)}"
  links="${PIP_FIND_LINKS:-$("$PYTHON" -m pip config get global.find-links 2>/dev/null || true)}"
  local_idx=() SRC=()
  for u in $idx; do [[ $u == file://* ]] && local_idx+=("$u"); done
  for l in $links; do [[ $l == *://* && $l != file://* ]] || SRC+=(--find-links "$l"); done
  ((${#local_idx[@]} + ${#SRC[@]})) || skip "pip has no local package disk configured (no file:// index, no local find-links), so $TORCH_SPEC cannot come from it"
  if ((${#local_idx[@]})); then
    SRC=(--index-url "${local_idx[0]}" "${SRC[@]}")
    for u in "${local_idx[@]:1}"; do SRC+=(--extra-index-url "$u"); done
  else
    SRC=(--no-index "${SRC[@]}")
  fi
fi
echo "ci_cuda_build: package sources: ${SRC[*]:-(pip as configured)}"

# cmake: scikit-build-core uses one on PATH when it is new enough, else the cmake package.
if ! cmake --version 2>/dev/null | head -1 | awk '{split($3, v, "."); exit !(v[1] > 3 || (v[1] == 3 && v[2] >= 24))}'; then
  BUILD_DEPS+=("cmake>=3.24")
fi

# ---- 1. the venv ----
export TORCH_WANT
# torch imports, is $TORCH_WANT with CUDA 13; prints its version.
TORCH_OK='import torch, sys
v, c = torch.__version__, torch.version.cuda or ""
ok = v.split("+")[0] == __import__("os").environ["TORCH_WANT"] and c.startswith("13.")
print(f"{v} CUDA {c or None}") if ok else sys.exit(f"got torch {v}, CUDA {c or None}")'
WANT="$TORCH_SPEC ${BUILD_DEPS[*]} | $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
# Prints torch's version when the venv holds what it should and torch imports; fails otherwise.
venv_healthy() {
  [[ -x $PY && -f $STAMP && "$(cat "$STAMP")" == "$WANT" ]] || return 1
  "$PY" -c 'import numpy, pybind11, scikit_build_core, ninja' 2>/dev/null && "$PY" -c "$TORCH_OK" 2>/dev/null
}
if have_torch=$(venv_healthy); then
  echo "ci_cuda_build: venv: cached ($have_torch)"
  phase_done "venv (cached)"
else
  if [[ -e $VENV ]]; then
    echo "ci_cuda_build: venv: $VENV lacks its stamp, is out of date or broken: re-creating it"
    [[ -f $VENV/pyvenv.cfg ]] || die "refusing to remove $VENV: it is not a virtual environment"
    rm -rf "$VENV"
  fi
  "$PYTHON" -m venv "$VENV"
  # Is torch there at all (a dry run, no download)? The one reason besides nvcc to skip.
  if ! probe=$(pip_ "$PY" install --dry-run --no-deps --disable-pip-version-check "${SRC[@]}" "$TORCH_SPEC" 2>&1); then
    if grep -qE 'Could not find a version|No matching distribution|conflicting dependencies' <<<"$probe"; then
      skip "$TORCH_SPEC is not on the local package disk: $(grep -m1 ERROR <<<"$probe")"
    fi
    die "could not ask pip for $TORCH_SPEC: $probe"
  fi
  phase_done "venv: create, probe"
  if ! pip_ "$PY" install "${PIPQ[@]}" "${SRC[@]}" "$TORCH_SPEC" "${BUILD_DEPS[@]}" 2>"$LOGDIR/pip.err"; then
    # Some requirement of torch is not on the local disk: torch without its dependencies, then
    # each of them that is there; the import check below says whether torch works without the rest.
    echo "ci_cuda_build: venv: not all of torch's requirements are on the local disk ($(grep -m1 ERROR "$LOGDIR/pip.err" || true))"
    pip_ "$PY" install "${PIPQ[@]}" --no-deps "${SRC[@]}" "$TORCH_SPEC"
    phase_done "venv: resolve (fails), torch alone"
    mapfile -t reqs < <("$PY" - <<'EOF'
import importlib.metadata as md
from pip._vendor.packaging.requirements import Requirement
for r in md.requires("torch") or []:
    req = Requirement(r)
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        print(str(req).split(";")[0].strip())
EOF
)
    have=() MISSING=()
    for r in "${reqs[@]}"; do
      if pip_ "$PY" install --dry-run "${PIPQ[@]}" "${SRC[@]}" "$r" >/dev/null 2>&1; then have+=("$r"); else MISSING+=("$r"); fi
    done
    echo "ci_cuda_build: venv: WARNING: not on the local disk, torch installed without: ${MISSING[*]:-(none)}"
    phase_done "venv: look up torch's deps"
    # pip then reports the missing ones as a dependency conflict; that is expected here.
    pip_ "$PY" install "${PIPQ[@]}" "${SRC[@]}" "${have[@]}" "${BUILD_DEPS[@]}"
  fi
  if ! have_torch=$("$PY" -c "$TORCH_OK" 2>&1); then
    if [[ -n ${MISSING[*]:-} ]]; then skip "$TORCH_SPEC from the local disk does not import without ${MISSING[*]}: $(tail -1 <<<"$have_torch")"; fi
    die "torch in $VENV does not work: $(tail -3 <<<"$have_torch")"
  fi
  echo "$WANT" >"$STAMP"
  echo "ci_cuda_build: venv: $have_torch installed"
  phase_done "venv: install"
fi

# ---- 2. the build ----
# One build dir per (clone, torch, nvcc, python, archs); others are removed. scikit-build-core
# re-runs CMake's configure every time, ninja rebuilds what changed (sources and headers).
TORCH_VERSION=${have_torch%% *}  # "2.14.1+cu130 CUDA 13.0" -> 2.14.1+cu130
KEY=$(printf '%s\n' "$REPO" "$TORCH_VERSION" "$NVCC_VERSION" "$WANT" "$ARCHS" | sha256sum | cut -c1-12)
BUILD_ROOT=$CACHE/build-cuda
BUILD_DIR=$BUILD_ROOT/$KEY
mkdir -p "$BUILD_ROOT"
find "$BUILD_ROOT" -mindepth 1 -maxdepth 1 ! -name "$KEY" -exec rm -rf {} +
if [[ ${KERNELFUSE_CUDA_CLEAN:-0} == 1 ]]; then rm -rf "$BUILD_DIR"; fi
[[ -d $BUILD_DIR ]] && echo "ci_cuda_build: build: incremental in $BUILD_DIR" || echo "ci_cuda_build: build: from scratch in $BUILD_DIR"
# The old install goes first: a failed build can then never leave a previous one to be checked.
"$PY" -m pip uninstall --yes --quiet kernelfuse 2>/dev/null || true
BUILD_LOG=$LOGDIR/build-cuda.log
build_start=$LOGDIR/.build-start
touch "$build_start"
ninja_log_lines=1
[[ -f $BUILD_DIR/.ninja_log ]] && ninja_log_lines=$(wc -l <"$BUILD_DIR/.ninja_log")
if ! KERNELFUSE_CUDA=ON KERNELFUSE_CUDA_ARCHS=$ARCHS CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$PY" -m pip install --no-build-isolation --no-deps --no-compile --disable-pip-version-check -v \
    -C build-dir="$BUILD_DIR" . >"$BUILD_LOG" 2>&1; then
  tail -n 80 "$BUILD_LOG"
  die "the CUDA build failed (full log: $BUILD_LOG; KERNELFUSE_CUDA_CLEAN=1 rebuilds from scratch)"
fi
n_cu=$(grep -c 'Building CUDA object' "$BUILD_LOG" || true)
n_cxx=$(grep -c 'Building CXX object' "$BUILD_LOG" || true)
echo "ci_cuda_build: build: ok, compiled $n_cu .cu and $n_cxx .cpp files (log: $BUILD_LOG)"
n_warn=$(grep -cE ': warning( #[0-9A-Za-z-]+)?:' "$BUILD_LOG" || true)
if ((n_warn)); then
  echo "ci_cuda_build: build: $n_warn compiler warning(s), the first ones:"
  grep -E ': warning( #[0-9A-Za-z-]+)?:' "$BUILD_LOG" | head -10 || true
fi
if ((n_cu + n_cxx)) && [[ -f $BUILD_DIR/.ninja_log ]]; then  # this run's slowest steps (ninja appends to its log)
  (( $(wc -l <"$BUILD_DIR/.ninja_log") > ninja_log_lines )) || ninja_log_lines=1
  echo "ci_cuda_build: build: slowest steps of this run:"
  tail -n +"$((ninja_log_lines + 1))" "$BUILD_DIR/.ninja_log" | grep -v '^#' |
    awk '{ n = split($4, p, "/"); printf "  %6.1f s  %s\n", ($2 - $1) / 1000, p[n] }' | sort -rn | head -5 || true
fi
SO=$("$PY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("kernelfuse").origin).parent)')
[[ -n $(find "$SO" -maxdepth 1 -name '_C*.so' -newer "$build_start") ]] || die "no freshly installed _C*.so in $SO"
phase_done "build"

# ---- 3. the check (from outside the clone, so the installed package is what is imported) ----
check_rc=0
(cd "$CACHE" && "$PY" "$REPO/scripts/check_cuda_registrations.py" --source "$REPO/csrc/kernelfuse.cpp") || check_rc=$?
phase_done "registration check"
echo "ci_cuda_build: cache disk use: $(du -sh "$VENV" | cut -f1) venv, $(du -sh "$BUILD_DIR" | cut -f1) build dir"
((check_rc == 0)) || die "the registration check failed (exit $check_rc)"
