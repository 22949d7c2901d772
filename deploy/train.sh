#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/train.sh [--dry-run] [--archive SOURCE | --twitter NAME | --skip-collect]
                       [--params NAME] [--fetch-model DIR]

Collect tweets and train a model on the VirtualBox host LOCAL_MACHINE (deploy/local-host.sh):
1. build the training image there from this checkout;
2. collect (the collect service) into the tweets volume: an archive file or folder of this
   machine (copied into the volume first), an http(s) URL, or an account's new tweets from the
   X API (--twitter; needs TWITTER_BEARER_TOKEN);
3. train and evaluate with papermill (the train service): notebooks 03-train-model and
   04-evaluate-model with notebooks/params/NAME/; the executed notebooks land in the runs
   volume, the exported model in the models volume (models/covfefe with the full parameters);
4. with --fetch-model DIR, copy that model out of the models volume into DIR on this machine
   (models/covfefe replaces the bundled model: deploy/04-up.sh then builds it into the API).

Options:
  --archive SOURCE   file, folder or URL of the Trump Twitter Archive (default: COVFEFE_ARCHIVE,
                     else ../shared/data/trump-twitter-archive beside the repository)
  --twitter NAME     collect the account's new tweets from the X API instead
  --skip-collect     train on the tweets the volume already holds
  --params NAME      the profile notebooks/params/NAME/ (default: TRAIN_PARAMS)
  --fetch-model DIR  copy the trained model into DIR afterwards
  -n, --dry-run      print the commands instead of running them
  -h, --help         show this help

JupyterLab instead of a batch run: deploy/service.sh start train, then open
http://\$(docker-machine ip LOCAL_MACHINE):JUPYTER_PORT/ with JUPYTER_TOKEN."

train() {
  parse_args "$@"
  set -- "${ARGS[@]}"
  local archive=${COVFEFE_ARCHIVE:-../shared/data/trump-twitter-archive} twitter='' skip_collect=''
  local params='' fetch_dir=''
  while (($#)); do
    case $1 in
      --archive | --twitter | --params | --fetch-model)
        (($# >= 2)) || die_usage "$1 needs a value (try $SCRIPT --help)"
        case $1 in
          --archive)
            archive=$2
            [[ $archive =~ ^https?:// ]] || archive=$(from_caller "$archive")
            ;;
          --twitter) twitter=$2 ;;
          --params) params=$2 ;;
          --fetch-model) fetch_dir=$(from_caller "$2") ;;
        esac
        shift 2
        ;;
      --skip-collect)
        skip_collect=1
        shift
        ;;
      *) unknown_argument "$1" ;;
    esac
  done
  load_config
  require_config LOCAL_MACHINE
  params=${params:-${TRAIN_PARAMS:-}}
  [[ $params ]] || die_usage "no parameter set: pass --params NAME or set TRAIN_PARAMS"
  [[ -d notebooks/params/$params ]] ||
    die_usage "there is no parameter profile notebooks/params/$params/ (try ci or full)"
  if [[ $twitter ]]; then
    require_secret TWITTER_BEARER_TOKEN
  elif [[ ! $skip_collect && ! $archive =~ ^https?:// && ! -e $archive ]]; then
    die_usage "the archive $archive does not exist (pass --archive FILE, FOLDER or URL)"
  fi
  require_docker_machine
  require_tool docker "install the Docker CLI (docs.docker.com/engine/install)"
  use_machine "$LOCAL_MACHINE"
  COMPOSE_OPTIONS=(--profile train)
  compose build train
  compose_setup
  if [[ $twitter ]]; then
    compose run --rm collect covfefe collect --twitter "$twitter"
  elif [[ $skip_collect ]]; then
    log "skipping collection: training on the tweets already in the volume"
  elif [[ $archive =~ ^https?:// ]]; then
    compose run --rm collect covfefe collect --archive "$archive"
  else
    # Streamed into the tweets volume: the engine runs in the VM, which cannot see this folder.
    local source_dir source_name
    if [[ -d $archive ]]; then
      source_dir=$archive
      source_name=.
    else
      source_dir=$(dirname "$archive")
      source_name=$(basename "$archive")
    fi
    pipe tar -C "$source_dir" -cf - "$source_name" '|' "${COMPOSE_CMD[@]}" run --rm -T \
      --entrypoint sh collect -c 'rm -rf /data/archive && mkdir /data/archive && tar -xf - -C /data/archive'
    compose run --rm collect
  fi
  compose run --rm train python -m covfefe.notebooks "$params" \
    03-train-model 04-evaluate-model
  if [[ $fetch_dir ]]; then
    run mkdir -p "$fetch_dir"
    pipe "${COMPOSE_CMD[@]}" run --rm -T --entrypoint tar train -C models/covfefe -cf - . \
      '|' tar -xf - -C "$fetch_dir"
  fi
  is_dry_run || log "done: the executed notebooks are in the runs volume (deploy/service.sh shell train)"
}

train "$@"
