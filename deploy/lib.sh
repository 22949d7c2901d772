#!/usr/bin/env bash
# Helpers shared by the deploy scripts (sourced, never run): configuration, the --dry-run runner,
# logging, argument parsing and the checks for tools and secrets.
#
# Every script sources this file, sets USAGE, calls `parse_args "$@"` and `load_config`, and runs
# each command through `run` so that --dry-run prints exactly what would run (secrets masked).
# Scripts work from the repository root, whatever the caller's directory.

if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404)); then
  echo "covfefe deploy: these scripts need bash 4.4 or later (macOS: brew install bash)" >&2
  exit 1
fi

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$DEPLOY_DIR")
SCRIPT=deploy/$(basename "$0")
# Where the operator ran the script: relative paths given as arguments are taken from there.
CALLER_DIR=$PWD
cd "$ROOT" || exit 1

# Another environment (staging...) or the tests point these at other files.
CONFIG_FILE=${COVFEFE_DEPLOY_CONFIG:-deploy/config.env}
SECRETS_FILE=${COVFEFE_DEPLOY_SECRETS:-deploy/deploy.secrets.env}
COMPOSE_FILE=deploy/docker-compose.yml
# The swarm stack (07-stack.sh, 99-teardown.sh); the tests deploy a part of it.
# shellcheck disable=SC2034  # used by the scripts that source this file
STACK_FILE=${COVFEFE_STACK_FILE:-deploy/stack.yml}
# Names of variables whose values never appear in what a script prints.
SECRET_NAME_PATTERN='(_TOKEN|_KEY|_KEY_ID|_PASS|PASSWORD)$|SECRET'
# Values this short would mask ordinary words; no real secret is that short.
MIN_MASKED_LENGTH=4
DRY_RUN=
ARGS=()
# More options for every compose command, such as (--profile train) for collect and train.
COMPOSE_OPTIONS=()

log() {
  printf '%s: %s\n' "$SCRIPT" "$(mask "$*")" >&2
}

warn() {
  log "warning: $*"
}

die() {
  log "error: $*"
  exit 1
}

# A mistake of the operator's (bad option, missing setting): exit status 2.
die_usage() {
  log "error: $*"
  exit 2
}

# Turn xtrace (TRACE=1) off while secret values are in play, and back on afterwards.
xtrace_pause() {
  XTRACE_WAS_ON=
  if [[ $- == *x* ]]; then
    XTRACE_WAS_ON=1
    set +x
  fi
}

xtrace_resume() {
  if [[ ${XTRACE_WAS_ON:-} ]]; then set -x; fi
}

is_dry_run() {
  [[ -n $DRY_RUN ]]
}

# Print TEXT with the value of every secret variable (see SECRET_NAME_PATTERN) replaced by ***.
mask() {
  xtrace_pause
  local text=$1 name value
  while IFS= read -r name; do
    [[ $name =~ $SECRET_NAME_PATTERN ]] || continue
    value=${!name:-}
    if ((${#value} >= MIN_MASKED_LENGTH)); then
      text=${text//"$value"/***}
    fi
  done < <(compgen -e)
  printf '%s' "$text"
  xtrace_resume
}

# Print the arguments as one shell-quoted command line (like Python's shlex.join).
quote_command() {
  local arg quoted=()
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      quoted+=("$arg")
    else
      quoted+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${quoted[*]}"
}

# Print a command (masked) as --dry-run shows it, or as a real run logs it.
show_command() {
  if is_dry_run; then
    printf '%s\n' "$(mask "$(quote_command "$@")")"
  else
    printf '+ %s\n' "$(mask "$(quote_command "$@")")" >&2
  fi
}

# Run a command, or with --dry-run only print it.
run() {
  show_command "$@"
  is_dry_run || "$@"
}

# run_with_input FILE COMMAND...: run COMMAND with FILE on its standard input.
run_with_input() {
  local input=$1
  shift
  if is_dry_run; then
    printf '%s < %s\n' "$(mask "$(quote_command "$@")")" "$(quote_command "$input")"
  else
    printf '+ %s < %s\n' "$(mask "$(quote_command "$@")")" "$(quote_command "$input")" >&2
    "$@" <"$input"
  fi
}

# capture VAR PLACEHOLDER HINT COMMAND...: set VAR to COMMAND's output (HINT says what to do if
# it fails); --dry-run prints the command and sets VAR to PLACEHOLDER instead.
capture() {
  local var=$1 placeholder=$2 hint=$3 output
  shift 3
  show_command "$@"
  if is_dry_run; then
    output=$placeholder
  else
    local shown=() arg
    for arg in "$@"; do
      # Code given with -c would drown the message.
      if [[ $arg == *$'\n'* ]]; then shown+=("..."); else shown+=("$arg"); fi
    done
    output=$("$@") || die "$(mask "$(quote_command "${shown[@]}")") failed: $hint"
  fi
  printf -v "$var" '%s' "$output"
}

# Handle --dry-run and --help; leave the other arguments in ARGS. The script defines USAGE.
parse_args() {
  ARGS=()
  while (($#)); do
    case $1 in
      -n | --dry-run) DRY_RUN=1 ;;
      -h | --help)
        printf '%s\n' "$USAGE"
        exit 0
        ;;
      --)
        shift
        ARGS+=("$@")
        break
        ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
}

# Complain about an option or argument the script does not know.
unknown_argument() {
  die_usage "unknown argument '$1' (try $SCRIPT --help)"
}

# Complain unless parse_args left no arguments (the script takes only --dry-run and --help).
no_arguments() {
  ((${#ARGS[@]} == 0)) || unknown_argument "${ARGS[0]}"
}

# Read KEY=value lines from FILE into the environment (exported); variables already in the
# environment win, so `DOMAIN=staging.example.org deploy/04-up.sh` works. Values are read as
# docker compose reads --env-file: one pair of enclosing quotes and a trailing " # comment"
# after an unquoted value are dropped, and nothing is expanded.
load_env_file() {
  local file=$1 line key value number=0
  xtrace_pause
  while IFS= read -r line || [[ -n $line ]]; do
    number=$((number + 1))
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    if [[ ! $line =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
      xtrace_resume
      die_usage "$file line $number is not KEY=value"
    fi
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    if [[ $value =~ ^\"(.*)\"[[:space:]]*$ || $value =~ ^\'(.*)\'[[:space:]]*$ ]]; then
      value=${BASH_REMATCH[1]}
    elif [[ $value == *[[:space:]]#* ]]; then
      value=${value%%[[:space:]]#*}
      value=${value%"${value##*[![:space:]]}"}
    fi
    if [[ ! -v $key ]]; then
      export "$key=$value"
    fi
  done <"$file"
  xtrace_resume
}

# Load deploy/config.env (required), then deploy/deploy.secrets.env when it exists.
load_config() {
  [[ -f $CONFIG_FILE ]] || die_usage "the configuration file $CONFIG_FILE does not exist"
  load_env_file "$CONFIG_FILE"
  if [[ -f $SECRETS_FILE ]]; then
    load_env_file "$SECRETS_FILE"
  fi
}

# require_config VAR...: each must be set and non-empty.
require_config() {
  local name
  for name in "$@"; do
    if [[ -z ${!name:-} ]]; then
      die_usage "$name is not set: set it in $CONFIG_FILE (.env.example describes every variable)"
    fi
  done
}

# require_secret VAR...: each must be set, from the secrets file or the environment. Only the
# name is ever printed. A dry run warns instead, so it can be previewed before secrets exist.
require_secret() {
  local name missing=()
  xtrace_pause
  for name in "$@"; do
    [[ -n ${!name:-} ]] || missing+=("$name")
  done
  xtrace_resume
  for name in "${missing[@]}"; do
    local message="$name is not set: put it in $SECRETS_FILE (copy"
    message+=" deploy/deploy.secrets.env.example) or export it"
    if is_dry_run; then warn "$message"; else die_usage "$message"; fi
  done
}

# require_tool NAME [HOW TO GET IT]: NAME must be on PATH (a dry run only warns).
require_tool() {
  local name=$1 hint=${2:-}
  command -v "$name" >/dev/null 2>&1 && return 0
  local message="$name is not installed${hint:+: $hint}"
  if is_dry_run; then warn "$message"; else die "$message"; fi
}

require_docker_machine() {
  local url=https://github.com/docker/machine/releases/download/v0.16.2
  local fork=https://gitlab-docker-machine-downloads.s3.amazonaws.com/main
  require_tool docker-machine "Docker archived docker-machine in 2021, so package managers
  no longer ship it. Install either its last release, v0.16.2 (github.com/docker/machine/releases):
    curl -fsSL -o docker-machine $url/docker-machine-\$(uname -s)-\$(uname -m)
    sudo install docker-machine /usr/local/bin/docker-machine
  or GitLab's maintained fork (gitlab.com/gitlab-org/ci-cd/docker-machine; it also has
  builds for Apple silicon, and its releases page lists pinned versions):
    curl -fsSL -o docker-machine $fork/docker-machine-\$(uname -s)-\$(uname -m)
    sudo install docker-machine /usr/local/bin/docker-machine
  then check with: docker-machine version"
}

# from_caller PATH: PATH as given on the command line, made absolute from CALLER_DIR.
from_caller() {
  if [[ $1 == /* ]]; then printf '%s' "$1"; else printf '%s' "$CALLER_DIR/$1"; fi
}

# The project's Python (the checkout's .venv if there is one), for deploy/*.py.
python_command() {
  if [[ ${PYTHON:-} ]]; then
    printf '%s' "$PYTHON"
  elif [[ -x .venv/bin/python ]]; then
    printf '%s' .venv/bin/python
  else
    printf '%s' python3
  fi
}

# The compose command: COMPOSE if set, the docker CLI plugin if installed, else docker-compose.
# Found by looking at files, not by running anything, so a dry run runs nothing.
compose_command() {
  if [[ ${COMPOSE:-} ]]; then
    printf '%s' "$COMPOSE"
    return
  fi
  local folder
  for folder in "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" /usr/local/lib/docker/cli-plugins \
    /usr/local/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins \
    /usr/libexec/docker/cli-plugins; do
    if [[ -x $folder/docker-compose ]]; then
      printf '%s' "docker compose"
      return
    fi
  done
  if command -v docker-compose >/dev/null 2>&1; then
    printf '%s' docker-compose
  else
    printf '%s' "docker compose"
  fi
}

# Set COMPOSE_CMD to the compose command line for deploy/docker-compose.yml and the configuration.
compose_setup() {
  local command
  read -r -a command <<<"$(compose_command)"
  if ! is_dry_run && ! command -v "${command[0]}" >/dev/null 2>&1; then
    die "${command[0]} is not installed: install Docker with its compose plugin" \
      "(docs.docker.com/compose/install) or Debian's docker-compose package"
  fi
  COMPOSE_CMD=("${command[@]}" -f "$COMPOSE_FILE" --env-file "$CONFIG_FILE"
    "${COMPOSE_OPTIONS[@]}")
}

# compose ARGS...: run docker compose (through `run`) on deploy/docker-compose.yml.
compose() {
  compose_setup
  run "${COMPOSE_CMD[@]}" "$@"
}

# pipe COMMAND... '|' COMMAND...: run a two-command pipeline, or with --dry-run print it.
pipe() {
  local left=() right=()
  while (($#)) && [[ $1 != '|' ]]; do
    left+=("$1")
    shift
  done
  (($#)) || die "pipe: no '|' between the two commands"
  shift
  right=("$@")
  local line
  line="$(mask "$(quote_command "${left[@]}")") | $(mask "$(quote_command "${right[@]}")")"
  if is_dry_run; then
    printf '%s\n' "$line"
  else
    printf '+ %s\n' "$line" >&2
    "${left[@]}" | "${right[@]}"
  fi
}

# machine_name local|aws: the docker-machine name of that host, from the configuration.
machine_name() {
  case $1 in
    local)
      require_config LOCAL_MACHINE
      printf '%s' "$LOCAL_MACHINE"
      ;;
    aws)
      require_config AWS_MACHINE
      printf '%s' "$AWS_MACHINE"
      ;;
    *) die_usage "unknown host '$1': expected local or aws (try $SCRIPT --help)" ;;
  esac
}

# machine_exists NAME: whether docker-machine knows a host of that name (a dry run says yes).
machine_exists() {
  is_dry_run && return 0
  local names
  names=$(docker-machine ls --quiet) || die "docker-machine ls failed"
  grep -qxF -- "$1" <<<"$names"
}

# use_machine NAME: point docker (and compose) at that docker-machine host.
use_machine() {
  local name=$1 environment
  if is_dry_run; then
    printf '%s\n' "eval \"\$(docker-machine env --shell bash $(quote_command "$name"))\""
    return
  fi
  require_docker_machine
  environment=$(docker-machine env --shell bash "$name") ||
    die "docker-machine cannot reach $name (docker-machine ls shows its state)"
  eval "$environment"
  log "docker now talks to $name ($DOCKER_HOST)"
}

# worker_machines: the names of the swarm's worker hosts that docker-machine knows
# (AWS_MACHINE-worker-1, -2...), one a line; a dry run lists SWARM_WORKERS of them.
worker_machines() {
  require_config AWS_MACHINE
  local prefix=$AWS_MACHINE-worker- count=${SWARM_WORKERS:-0} number
  if is_dry_run; then
    for ((number = 1; number <= count; number++)); do printf '%s\n' "$prefix$number"; done
    return
  fi
  local names
  names=$(docker-machine ls --quiet) || die "docker-machine ls failed"
  grep -E "^${prefix//./\\.}[0-9]+\$" <<<"$names" | sort -V || true
}


# swarm_state VAR: set VAR to the swarm state of the engine docker talks to now (inactive,
# active...; a dry run says active).
swarm_state() {
  capture "$1" active "is the host running? (docker-machine ls)" \
    docker info --format '{{.Swarm.LocalNodeState}}'
}
