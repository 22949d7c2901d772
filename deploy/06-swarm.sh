#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/06-swarm.sh [--dry-run]

Step 6 (beyond one host, optional): make the EC2 host AWS_MACHINE a Docker swarm manager and
join SWARM_WORKERS more hosts to it as workers, named AWS_MACHINE-worker-1, -2..., each created
by deploy/02-aws-host.sh when it does not exist yet (same region, type and security group). The
security group is brought up to date first: it lets its members, and only them, reach each
other's swarm ports (2377/tcp, 7946/tcp+udp, 4789/udp). Nodes are addressed by their private IP
in the VPC. Idempotent: run it again after raising SWARM_WORKERS. Then deploy/07-stack.sh.

Options:
  -n, --dry-run  print the commands instead of running them
  -h, --help     show this help

Each worker costs what the manager does (deploy/README.md, \"Beyond one host\")."

SWARM_PORT=2377

# untraced COMMAND...: run COMMAND (a function) with TRACE=1's xtrace off, for secret values.
untraced() {
  local tracing=
  if [[ $- == *x* ]]; then
    tracing=1
    set +x
  fi
  "$@"
  if [[ $tracing ]]; then set -x; fi
}

# join_swarm ADDRESS MANAGER: the host docker talks to joins as a worker, advertising ADDRESS.
# The token is read here, not passed in: a traced call would show it.
join_swarm() {
  run docker swarm join --token "$SWARM_JOIN_TOKEN" --advertise-addr "$1" "$2"
}

# private_ip NAME VAR: set VAR to the host's address inside the VPC, where the swarm members
# talk to each other.
private_ip() {
  local name=$1 found
  capture found "<$name-private-ip>" "docker-machine inspect $name failed" \
    docker-machine inspect --format '{{.Driver.PrivateIPAddress}}' "$name"
  [[ -n $found ]] || die "docker-machine knows no private IP of $name (an amazonec2 host?)"
  printf -v "$2" '%s' "$found"
}

# in_swarm NAME: point docker at the host NAME; succeed, and say so, when it is in a swarm
# already (a dry run assumes it is not, and prints every step).
in_swarm() {
  local state
  use_machine "$1"
  swarm_state state
  if [[ $state == active ]] && ! is_dry_run; then
    log "$1 is in a swarm already"
    return 0
  fi
  return 1
}

swarm() {
  parse_args "$@"
  no_arguments
  load_config
  require_config AWS_MACHINE SWARM_WORKERS
  [[ $SWARM_WORKERS =~ ^[0-9]+$ ]] ||
    die_usage "SWARM_WORKERS must be a whole number of worker hosts, not '$SWARM_WORKERS'"
  require_docker_machine
  require_tool docker "install the Docker CLI (docs.docker.com/engine/install)"
  local dry=()
  if is_dry_run; then dry=(--dry-run); fi
  # The group's rules include the swarm ports between members (deploy/security_group.py).
  run deploy/01-security-group.sh "${dry[@]}"
  machine_exists "$AWS_MACHINE" || die "no host $AWS_MACHINE: run deploy/02-aws-host.sh first"

  local manager_ip
  private_ip "$AWS_MACHINE" manager_ip
  in_swarm "$AWS_MACHINE" || run docker swarm init --advertise-addr "$manager_ip"
  # A secret (anyone holding it can join): masked wherever a command is printed, and out of
  # TRACE=1's way.
  export SWARM_JOIN_TOKEN
  untraced capture SWARM_JOIN_TOKEN "<join-token>" "is $AWS_MACHINE a swarm manager?" \
    docker swarm join-token --quiet worker

  local number name address
  for ((number = 1; number <= SWARM_WORKERS; number++)); do
    name=$AWS_MACHINE-worker-$number
    if ! machine_exists "$name"; then
      run deploy/02-aws-host.sh "$name"
    fi
    private_ip "$name" address
    in_swarm "$name" && continue
    untraced join_swarm "$address" "$manager_ip:$SWARM_PORT"
  done
  use_machine "$AWS_MACHINE"
  run docker node ls
  is_dry_run || log "next: deploy/07-stack.sh"
}

swarm "$@"
