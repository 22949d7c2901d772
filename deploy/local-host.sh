#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/local-host.sh [--dry-run]

Create the local VirtualBox host LOCAL_MACHINE with docker-machine, for collecting tweets and
training (deploy/train.sh): LOCAL_CPUS processors, LOCAL_MEMORY MB of memory, a LOCAL_DISK MB
disk, on the host-only network LOCAL_HOSTONLY_CIDR. Optional: the API image bundles a trained
model, so the web deployment (steps 1 to 5) does not need it. Does nothing if the host exists.

Options:
  -n, --dry-run  print the commands instead of running them
  -h, --help     show this help

Needs VirtualBox (virtualbox.org; x86-64 machines only) and docker-machine."

local_host() {
  parse_args "$@"
  no_arguments
  load_config
  require_config LOCAL_MACHINE LOCAL_CPUS LOCAL_MEMORY LOCAL_DISK LOCAL_HOSTONLY_CIDR
  require_docker_machine
  require_tool VBoxManage "install VirtualBox (virtualbox.org/wiki/Downloads)"
  if ! is_dry_run && machine_exists "$LOCAL_MACHINE"; then
    log "the host $LOCAL_MACHINE exists already (docker-machine ls): nothing to do"
    return 0
  fi
  run docker-machine create --driver virtualbox \
    --virtualbox-cpu-count "$LOCAL_CPUS" \
    --virtualbox-memory "$LOCAL_MEMORY" \
    --virtualbox-disk-size "$LOCAL_DISK" \
    --virtualbox-hostonly-cidr "$LOCAL_HOSTONLY_CIDR" \
    "$LOCAL_MACHINE"
  is_dry_run || log "next: deploy/train.sh"
}

local_host "$@"
