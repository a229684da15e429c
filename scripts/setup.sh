#!/usr/bin/env bash
# Installs every build and run dependency of mamba.cpp from Debian's packages (Debian 12, as root).
# This is the only place a dependency is named; the README's commands call it.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev libblis-dev
  libicu-dev
  clang-14 libfuzzer-14-dev libclang-rt-14-dev
  fortunes
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
