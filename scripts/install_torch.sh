#!/usr/bin/env bash
# Install the torch + torchvision pair this machine can run, before the project itself.
#
# spandrel (community models) needs torchvision, and a torchvision works only beside the torch
# build it was made for; a bare `torch` requirement with nothing installed would pull a
# multi-GB download. So .ci/run and the README both install the pair first, chosen here by
# the machine: x86_64 -> torch 2.14.1 + torchvision 0.29.1, aarch64 -> torch 2.9.1 +
# torchvision 0.24.1. UPSCALE_TORCH_PAIR="torch==X torchvision==Y" overrides the choice.
set -euo pipefail
if [ -n "${UPSCALE_TORCH_PAIR:-}" ]; then
  pair="$UPSCALE_TORCH_PAIR"
else
  case "$(uname -m)" in
    x86_64 | amd64 | AMD64) pair="torch==2.14.1 torchvision==0.29.1" ;;
    aarch64 | arm64) pair="torch==2.9.1 torchvision==0.24.1" ;;
    *) echo "install_torch.sh: no known torch pair for $(uname -m); set UPSCALE_TORCH_PAIR" >&2; exit 2 ;;
  esac
fi
# shellcheck disable=SC2086  # the pair is two requirement words
python -m pip install -q $pair
