#!/usr/bin/env bash
# Create .venv with the pinned stack (see setup.cfg and ../shared/docs/ENVIRONMENT.md).
# Idempotent: a second run checks a stamp and returns in seconds.
#
# Environment:
#   ESBNN_WHEELHOUSE  folder with a prebuilt mmcv-2.1.0 wheel for torch 2.14.1 (optional)
#   ESBNN_CACHE       where a locally built mmcv wheel is kept (default ~/.cache/esbnn_plugins)
#   PYTHON            interpreter used to create .venv (default python3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
SETUPTOOLS_PIN='setuptools>=77,<82'
CACHE="${ESBNN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/esbnn_plugins}"
MMCV_WHEELS="$CACHE/wheels/mmcv-$MMCV_VERSION-torch-$TORCH_VERSION"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

STAMP_FILE="$VENV/.esbnn_stamp"
STAMP="$(cat "$ROOT/setup.cfg" "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$STAMP" ]] \
   && "$PY" -c "import mmcv.ops, mmdet, mmpretrain, diffusers, esbnn_plugins" 2>/dev/null; then
  say "environment in $VENV is up to date"
  exit 0
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: this project needs Python 3.11 (set PYTHON=/path/to/python3.11)"
if [[ ! -x "$PY" ]]; then
  say "creating virtual environment $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

if ! "$PY" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION' or torchvision.__version__.split('+')[0] != '$TORCHVISION_VERSION')" 2>/dev/null; then
  say "installing torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION and build tools"
  pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "$SETUPTOOLS_PIN" wheel ninja
else
  pip_install -q "$SETUPTOOLS_PIN" wheel ninja
fi

build_mmcv_wheel() {
  command -v g++ >/dev/null || command -v c++ >/dev/null \
    || die "no C++ compiler found (g++/c++): building mmcv $MMCV_VERSION needs one (Debian: apt-get install g++), or set ESBNN_WHEELHOUSE to a folder holding a prebuilt mmcv-$MMCV_VERSION wheel for torch $TORCH_VERSION"
  local inc
  inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  [[ -f "$inc/Python.h" ]] || die "Python headers missing ($inc/Python.h): install the python3.11 development package"
  local work
  work="$(mktemp -d)"
  say "downloading the mmcv $MMCV_VERSION source distribution"
  "$PY" -m pip download --disable-pip-version-check --no-deps --no-binary mmcv "mmcv==$MMCV_VERSION" -d "$work"
  tar -xzf "$work"/mmcv-$MMCV_VERSION.tar.gz -C "$work"
  # torch >= 2.13 headers need C++20; mmcv's setup.py hard-codes -std=c++17 (ENVIRONMENT.md).
  sed -i 's/-std=c++17/-std=c++20/g' "$work/mmcv-$MMCV_VERSION/setup.py"
  local jobs="${MAX_JOBS:-$(nproc)}"
  say "building mmcv $MMCV_VERSION with compiled ops against torch $TORCH_VERSION ($jobs jobs)."
  say "this compiles 77 C++ files and takes about 20-25 minutes on 2 cores; the wheel is cached in $MMCV_WHEELS"
  mkdir -p "$MMCV_WHEELS"
  (cd "$work/mmcv-$MMCV_VERSION" && MAX_JOBS="$jobs" MMCV_WITH_OPS=1 \
     "$PY" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation . -w "$MMCV_WHEELS")
  rm -rf "$work"
}

if ! "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
  if [[ -n "${ESBNN_WHEELHOUSE:-}" ]] && compgen -G "$ESBNN_WHEELHOUSE/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
    say "installing mmcv $MMCV_VERSION from wheelhouse $ESBNN_WHEELHOUSE"
    pip_install --no-deps --no-index --find-links "$ESBNN_WHEELHOUSE" "mmcv==$MMCV_VERSION"
  else
    if ! compgen -G "$MMCV_WHEELS/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
      build_mmcv_wheel
    else
      say "using cached mmcv wheel from $MMCV_WHEELS"
    fi
    pip_install --no-deps --no-index --find-links "$MMCV_WHEELS" "mmcv==$MMCV_VERSION"
  fi
fi

say "installing esbnn_plugins (editable) and the pinned stack"
pip_install -e "$ROOT[test]" "$SETUPTOOLS_PIN"

say "checking the stack"
"$PY" - <<'PY'
import torch, mmengine, mmcv, mmcv.ops, mmdet, mmpretrain, diffusers, accelerate, numpy
import esbnn_plugins
print(f"[setup] torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, "
      f"mmdet {mmdet.__version__}, mmpretrain {mmpretrain.__version__}, diffusers {diffusers.__version__}, "
      f"numpy {numpy.__version__}, CUDA available: {torch.cuda.is_available()}")
PY
echo "$STAMP" > "$STAMP_FILE"
say "done"
