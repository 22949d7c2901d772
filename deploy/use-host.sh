#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/use-host.sh [--dry-run] local|aws|--unset

Print the docker environment of a docker-machine host (local: LOCAL_MACHINE, aws: AWS_MACHINE);
eval it to point docker and docker compose at that host in the current shell:

  eval \"\$(deploy/use-host.sh aws)\"      # docker ps now lists the EC2 host's containers
  eval \"\$(deploy/use-host.sh --unset)\"  # back to this machine's engine

Options:
  -n, --dry-run  print the command instead of running it
  -h, --help     show this help"

use_host() {
  parse_args "$@"
  ((${#ARGS[@]} == 1)) || die_usage "expected one host: local, aws or --unset (try $SCRIPT --help)"
  load_config
  require_docker_machine
  if [[ ${ARGS[0]} == --unset ]]; then
    run docker-machine env --shell bash --unset
    return
  fi
  local name
  name=$(machine_name "${ARGS[0]}")
  run docker-machine env --shell bash "$name"
}

use_host "$@"
