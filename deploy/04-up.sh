#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/04-up.sh [--dry-run]

Step 4: build and start the API (serve) and nginx (web) on the EC2 host AWS_MACHINE. The images
are built there from this checkout. Until step 5 nginx uses a self-signed placeholder
certificate. Run it again after pulling new code: only what changed is rebuilt and restarted.

Options:
  -n, --dry-run  print the commands instead of running them
  -h, --help     show this help"

up() {
  parse_args "$@"
  no_arguments
  load_config
  require_config DOMAIN AWS_MACHINE
  require_docker_machine
  require_tool docker "install the Docker CLI (docs.docker.com/engine/install)"
  use_machine "$AWS_MACHINE"
  compose up -d --build serve web
  is_dry_run || log "next: deploy/05-certificates.sh (the first time)"
}

up "$@"
