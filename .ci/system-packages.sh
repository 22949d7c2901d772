#!/usr/bin/env bash
# Install the Debian packages the tests need (.ci/apt-packages.txt) that are not installed yet,
# and npm where Node.js came without it. `make test` runs this first; it needs root (or sudo)
# only when something is missing.
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
cd "$(dirname "$0")/.."

system_packages() {
  local -a wanted missing=()
  mapfile -t wanted < <(grep -Ev '^\s*(#|$)' .ci/apt-packages.txt)
  local package
  for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$package")
  done
  command -v npm >/dev/null || missing+=(npm)
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  local -a sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || {
      echo "system-packages: missing ${missing[*]}; install them as root (apt-get install)" >&2
      return 1
    }
    sudo=(sudo)
  fi
  echo "system-packages: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

system_packages "$@"
