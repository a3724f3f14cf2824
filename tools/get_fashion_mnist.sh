#!/usr/bin/env bash
# Unpack the four official Fashion-MNIST idx files into data/fashion-mnist (or $1), where MMPretrain's
# FashionMNIST dataset and this project's FashionMNISTSplit read them. Source: Debian's package
# dataset-fashion-mnist (/usr/share/datasets/fashion-mnist): installed with apt-get when run as root,
# else downloaded with `apt-get download` and extracted with `dpkg -x` into data/.debs (no root needed).
# Already unpacked and complete: returns at once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/data/fashion-mnist}"
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
SIZES=(47040016 60008 7840016 10008)
SYSTEM=/usr/share/datasets/fashion-mnist
say() { printf '[data] %s\n' "$*"; }
die() { printf '[data] ERROR: %s\n' "$*" >&2; exit 1; }

complete() {
  for i in "${!FILES[@]}"; do
    [[ -f "$DEST/${FILES[$i]}" && "$(stat -c %s "$DEST/${FILES[$i]}")" == "${SIZES[$i]}" ]] || return 1
  done
}
if complete; then say "Fashion-MNIST is complete in $DEST"; exit 0; fi

SRC="$SYSTEM"
if [[ ! -f "$SRC/${FILES[0]}.gz" ]]; then
  command -v apt-get >/dev/null || die "apt-get not found: put the four official idx files (.gz or unpacked) into $DEST"
  if [[ "$(id -u)" == 0 ]]; then
    say "installing Debian's dataset-fashion-mnist (30 MB)"
    apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y dataset-fashion-mnist >/dev/null; } \
      || die "apt-get install dataset-fashion-mnist failed"
  else
    DEBS="$ROOT/data/.debs"
    mkdir -p "$DEBS"
    say "downloading Debian's dataset-fashion-mnist into $DEBS (no root: apt-get download + dpkg -x)"
    (cd "$DEBS" && apt-get download dataset-fashion-mnist) || die "apt-get download dataset-fashion-mnist failed"
    dpkg -x "$DEBS"/dataset-fashion-mnist_*.deb "$DEBS/root"
    SRC="$DEBS/root$SYSTEM"
  fi
fi
mkdir -p "$DEST"
for i in "${!FILES[@]}"; do
  [[ -f "$SRC/${FILES[$i]}.gz" ]] || die "$SRC/${FILES[$i]}.gz is missing after installing the package"
  gunzip -c "$SRC/${FILES[$i]}.gz" > "$DEST/${FILES[$i]}.part"
  [[ "$(stat -c %s "$DEST/${FILES[$i]}.part")" == "${SIZES[$i]}" ]] \
    || die "$SRC/${FILES[$i]}.gz unpacks to $(stat -c %s "$DEST/${FILES[$i]}.part") bytes, expected ${SIZES[$i]}"
  mv "$DEST/${FILES[$i]}.part" "$DEST/${FILES[$i]}"
done
say "Fashion-MNIST unpacked into $DEST (60,000 train + 10,000 test images)"
