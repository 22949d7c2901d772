#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/service.sh [--dry-run] [--host local|aws] ACTION SERVICE [OPTIONS]

Manage one service of deploy/docker-compose.yml on its host: serve, web and certbot run on the
EC2 host (aws), collect and train on the VirtualBox host (local); --host picks the other one.

Actions:
  start    create and start it (docker compose up -d)
  stop     stop it (its container stays; start brings it back)
  restart  restart its container (nginx rereads its certificates, for example)
  rebuild  rebuild its image from this checkout and recreate it, leaving the others alone
  logs     follow its logs; OPTIONS go to docker compose logs (e.g. --since 1h)
  shell    a shell inside it (a new container for collect and train)
  status   the state of every service on that host (docker compose ps)

Options:
  --host local|aws  the host to act on (default: the service's own)
  -n, --dry-run     print the commands instead of running them
  -h, --help        show this help"

service() {
  parse_args "$@"
  set -- "${ARGS[@]}"
  local host=
  while (($#)); do
    case $1 in
      --host)
        (($# >= 2)) || die_usage "--host needs a value: local or aws"
        host=$2
        shift 2
        ;;
      --host=*)
        host=${1#--host=}
        shift
        ;;
      -*) unknown_argument "$1" ;;
      *) break ;;
    esac
  done
  (($# >= 2)) || die_usage "expected ACTION SERVICE (try $SCRIPT --help)"
  local action=$1 name=$2
  shift 2
  local own_host
  case $name in
    serve | web | certbot) own_host=aws ;;
    collect | train) own_host=local ;;
    *) die_usage "unknown service '$name': expected serve, web, certbot, collect or train" ;;
  esac
  case $action in
    start | stop | restart | rebuild | shell | status) (($# == 0)) || unknown_argument "$1" ;;
    logs) ;;
    *) die_usage "unknown action '$action': expected start, stop, restart, rebuild, logs, shell or status" ;;
  esac
  load_config
  local machine
  machine=$(machine_name "${host:-$own_host}")
  require_docker_machine
  require_tool docker "install the Docker CLI (docs.docker.com/engine/install)"
  use_machine "$machine"
  if [[ $own_host == local ]]; then
    COMPOSE_OPTIONS=(--profile train)
  fi
  case $action in
    start) compose up -d "$name" ;;
    stop) compose stop "$name" ;;
    restart) compose restart "$name" ;;
    rebuild) compose up -d --build --no-deps "$name" ;;
    logs) compose logs --follow --tail 200 "$@" "$name" ;;
    shell)
      if [[ $own_host == local ]]; then
        compose run --rm "$name" bash
      else
        compose exec "$name" sh
      fi
      ;;
    status) compose ps ;;
  esac
}

service "$@"
