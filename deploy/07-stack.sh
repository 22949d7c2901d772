#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/07-stack.sh [--dry-run] [--tag TAG] [--web-tag TAG] [--model DIR]
                           [--no-build] [--scale N | --rollback]

Step 7 (beyond one host): deploy or update the stack COMPOSE_PROJECT_NAME (deploy/stack.yml) on
the swarm of deploy/06-swarm.sh: API_REPLICAS serve replicas behind web (nginx), redis for the
shared rate limit, certbot. The images are built from this checkout on every node (serve) and
on the manager (web, certbot). A new serve tag updates serve one replica at a time, the new one
healthy before the old one stops, so no request is lost. web owns the manager's ports 80 and
443, so its update stops the old nginx first (seconds without it): its tag is that of the last
commit that changed its files, and a deploy leaves it alone unless they changed. Then it waits
until every service has its replicas running and no update is in progress
(deploy/stack_health.py).

Options:
  --tag TAG      serve's tag (default: the checkout's commit, git rev-parse --short HEAD)
  --web-tag TAG  web's tag (default: the last commit that changed webapp/ or deploy/nginx|web/)
  --model DIR    bake this model artifact folder into serve instead of models/covfefe, e.g.
                 data/models/champion (the champion that covfefe promote or make update put
                 in service here); serve's tag becomes <commit>-model-<its digest>, so the
                 replicas take it with the rolling update and --rollback goes back
  --no-build     use images already on the nodes
  --scale N      only set the number of serve replicas to N (no build, no deploy)
  --rollback     only roll serve back to its previous image and settings
  -n, --dry-run  print the commands instead of running them
  -h, --help     show this help

The first time, on a host that ran the one-host compose deployment (04-up.sh), stop it first
(deploy/service.sh stop web, then serve and certbot): the stack takes over ports 80 and 443 and
the certificates volume."

# Wait for the stack to converge, up to this long (a rolling update of 3 replicas takes
# about a minute; image pulls on a fresh node longer).
WAIT_SECONDS=900

# Where --model's folder is copied for the serve image's build (inside the build context, let
# through by .dockerignore; removed after the build).
STAGED_MODEL=models/stack-model

# build_image NAME:TAG DOCKERFILE [OPTION...]: build covfefe-NAME:TAG on the host docker talks
# to now.
build_image() {
  run docker build --file "$2" "${@:3}" --tag "covfefe-$1" .
}

# stage_model DIR: copy the model artifact DIR (links followed: the served link is one) to
# STAGED_MODEL, removed again when the script exits.
stage_model() {
  is_dry_run || trap 'rm -rf "$STAGED_MODEL"' EXIT
  run rm -rf "$STAGED_MODEL"
  run cp -RL "$1" "$STAGED_MODEL"
}

# make_db_secret NAME: create the Docker secret NAME (MLflow's database password: random, never
# printed) unless the swarm has it already.
make_db_secret() {
  if ! is_dry_run && docker secret inspect "$1" >/dev/null 2>&1; then
    return
  fi
  pipe "$(python_command)" -c 'import secrets; print(secrets.token_hex(24))' '|' \
    docker secret create "$1" -
}

wait_for_stack() {
  run "$(python_command)" deploy/stack_health.py --stack "$COMPOSE_PROJECT_NAME" \
    --wait "$WAIT_SECONDS"
}

stack() {
  parse_args "$@"
  local build=1 scale='' rollback='' model=''
  TAG='' WEB_TAG=''
  set -- "${ARGS[@]}"
  while (($#)); do
    case $1 in
      --tag)
        [[ ${2:-} =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
          die_usage "--tag needs an image tag (letters, digits, _ . -), not '${2:-}'"
        TAG=$2
        shift
        ;;
      --web-tag)
        [[ ${2:-} =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
          die_usage "--web-tag needs an image tag (letters, digits, _ . -), not '${2:-}'"
        WEB_TAG=$2
        shift
        ;;
      --model)
        [[ ${2:-} ]] || die_usage "--model needs a model artifact folder"
        model=$(from_caller "$2")
        shift
        ;;
      --no-build) build='' ;;
      --scale)
        [[ ${2:-} =~ ^[0-9]+$ ]] || die_usage "--scale needs a number of replicas, not '${2:-}'"
        scale=$2
        shift
        ;;
      --rollback) rollback=1 ;;
      *) unknown_argument "$1" ;;
    esac
    shift
  done
  if [[ $model ]]; then
    [[ $build ]] || die_usage "--model builds serve with that model: it cannot go with --no-build"
    [[ -z $scale && -z $rollback ]] || die_usage "--model deploys: not with --scale or --rollback"
    [[ -f $model/metadata.json ]] ||
      die_usage "--model $model is not a model artifact folder (no metadata.json): give the served link (data/models/champion) or covfefe update's --out folder"
  fi
  load_config
  require_config DOMAIN EMAIL AWS_MACHINE COMPOSE_PROJECT_NAME
  require_docker_machine
  require_tool docker "install the Docker CLI (docs.docker.com/engine/install)"
  local serve=${COMPOSE_PROJECT_NAME}_serve
  if [[ $scale ]]; then
    use_machine "$AWS_MACHINE"
    run docker service scale --detach "$serve=$scale"
    wait_for_stack
    return
  fi
  if [[ $rollback ]]; then
    use_machine "$AWS_MACHINE"
    run docker service rollback --detach "$serve"
    wait_for_stack
    return
  fi
  if [[ -z $TAG ]]; then
    capture TAG "<commit>" "not a git checkout: pass --tag" git rev-parse --short HEAD
    if [[ $model ]]; then  # the metadata holds the model's version and its files' hashes
      local digest
      capture digest "<model-hash>" "cannot read $model/metadata.json" \
        sha256sum "$model/metadata.json"
      TAG=$TAG-model-${digest:0:12}
    fi
  fi
  if [[ -z $WEB_TAG ]]; then
    capture WEB_TAG "<web-commit>" "not a git checkout: pass --web-tag" \
      git log -1 --format=%h -- webapp deploy/nginx deploy/web
  fi
  local certbot_tag mlflow_tag
  capture certbot_tag "<certbot-commit>" "not a git checkout" \
    git log -1 --format=%h -- deploy/certbot
  capture mlflow_tag "<mlflow-commit>" "not a git checkout" \
    git log -1 --format=%h -- deploy/mlflow requirements/mlflow-server.txt
  if [[ $build ]]; then
    local workers node serve_options=()
    if [[ $model ]]; then
      stage_model "$model"
      serve_options=(--build-arg "MODEL=$STAGED_MODEL")
    fi
    mapfile -t workers < <(worker_machines)
    for node in "${workers[@]}"; do
      use_machine "$node"
      build_image "serve:$TAG" Dockerfile.serve "${serve_options[@]}"
    done
    use_machine "$AWS_MACHINE"
    build_image "serve:$TAG" Dockerfile.serve "${serve_options[@]}"
    build_image "web:$WEB_TAG" deploy/web/Dockerfile
    build_image "certbot:$certbot_tag" deploy/certbot/Dockerfile
    build_image "mlflow:$mlflow_tag" deploy/mlflow/Dockerfile
  else
    use_machine "$AWS_MACHINE"
  fi
  make_db_secret "${COMPOSE_PROJECT_NAME}_mlflow-db-password"
  # No registry: every node uses the image of that name it has (--resolve-image never).
  run env "SERVE_IMAGE=covfefe-serve:$TAG" "WEB_IMAGE=covfefe-web:$WEB_TAG" \
    "CERTBOT_IMAGE=covfefe-certbot:$certbot_tag" "MLFLOW_IMAGE=covfefe-mlflow:$mlflow_tag" \
    docker stack deploy --compose-file "$STACK_FILE" --resolve-image never --prune \
    "$COMPOSE_PROJECT_NAME"
  wait_for_stack
  is_dry_run || log "the stack runs $TAG: deploy/stack_health.py shows it, 07-stack.sh --rollback undoes it"
}

stack "$@"
