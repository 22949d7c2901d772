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

# The host's address inside the VPC, where the swarm members talk to each other.
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

# private_ip NAME VAR: set VAR to it.
private_ip() {
  local name=$1 found
  capture found "<$name-private-ip>" "docker-machine inspect $name failed" \
    docker-machine inspect --format '{{.Driver.PrivateIPAddress}}' "$name"
  [[ -n $found ]] || die "docker-machine knows no private IP of $name (an amazonec2 host?)"
  printf -v "$2" '%s' "$found"
}

swarm() {
  parse_args "$@"
  ((${#ARGS[@]} == 0)) || unknown_argument "${ARGS[0]}"
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

  local manager_ip state
  private_ip "$AWS_MACHINE" manager_ip
  use_machine "$AWS_MACHINE"
  swarm_state state
  if [[ $state == active ]] && ! is_dry_run; then
    log "$AWS_MACHINE is in a swarm already"
  else
    run docker swarm init --advertise-addr "$manager_ip"
  fi
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
    use_machine "$name"
    swarm_state state
    if [[ $state == active ]] && ! is_dry_run; then
      log "$name is in a swarm already"
      continue
    fi
    untraced join_swarm "$address" "$manager_ip:$SWARM_PORT"
  done
  use_machine "$AWS_MACHINE"
  run docker node ls
  is_dry_run || log "next: deploy/07-stack.sh"
}

swarm "$@"
