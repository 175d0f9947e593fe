#!/usr/bin/env bash
# Install the torch + torchvision pair this machine can run, before the project itself.
#
# spandrel (community models) needs torchvision, and a torchvision works only beside the torch
# build it was made for; a bare `torch` requirement with nothing installed would pull a
# multi-GB download. So .ci/run and the README both install the pair first, chosen here by
# the machine: x86_64 -> torch 2.14.1 + torchvision 0.29.1, aarch64 -> torch 2.9.1 +
# torchvision 0.24.1. UPSCALE_TORCH_PAIR="torch==X torchvision==Y" overrides the choice.
#
# Which build (UPSCALE_TORCH_BUILD, or --cpu for UPSCALE_TORCH_BUILD=cpu):
#   default  what pip finds for the pair: on x86_64 PyPI's CUDA build (runs on a CPU too, uses an
#            NVIDIA GPU when there is one; a virtualenv of about 5.7 GB), on aarch64 a CPU build.
#   cpu      PyTorch's CPU-only wheels (https://download.pytorch.org/whl/cpu): no GPU support, a
#            virtualenv of about 0.9 GB on x86_64. Needs that index to be reachable.
# --print    prints the pip command instead of running it.
set -euo pipefail
CPU_INDEX="https://download.pytorch.org/whl/cpu"

print_only=0
for arg in "$@"; do
  case "$arg" in
    --print) print_only=1 ;;
    --cpu) UPSCALE_TORCH_BUILD=cpu ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install_torch.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ -n "${UPSCALE_TORCH_PAIR:-}" ]; then
  pair="$UPSCALE_TORCH_PAIR"
else
  case "$(uname -m)" in
    x86_64 | amd64 | AMD64) pair="torch==2.14.1 torchvision==0.29.1" ;;
    aarch64 | arm64) pair="torch==2.9.1 torchvision==0.24.1" ;;
    *) echo "install_torch.sh: no known torch pair for $(uname -m); set UPSCALE_TORCH_PAIR" >&2; exit 2 ;;
  esac
fi

case "${UPSCALE_TORCH_BUILD:-default}" in
  default) index="" ;;
  cpu) index="--index-url $CPU_INDEX" ;;
  *) echo "install_torch.sh: UPSCALE_TORCH_BUILD must be default or cpu, not ${UPSCALE_TORCH_BUILD}" >&2; exit 2 ;;
esac

# shellcheck disable=SC2086  # the pair is two requirement words, the index two words or none
command=(python -m pip install -q $pair $index)
if [ "$print_only" = 1 ]; then
  echo "${command[*]}"
else
  "${command[@]}"
fi
