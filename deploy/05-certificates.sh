#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/05-certificates.sh [--dry-run] [--staging] [--replace]

Step 5: get the Let's Encrypt certificate of DOMAIN, www.DOMAIN and api.DOMAIN on the EC2 host
with the certbot service (deploy/certbot/: webroot mode, nginx answers the challenges on port
80), start that service, which renews the certificate twice a day from then on, and restart
nginx so that it serves the certificate at once (renewals reload it by themselves). The DNS
records of step 3 must be in place. Idempotent: a certificate not due for renewal is kept.

Options:
  --staging      use Let's Encrypt's staging server (untrusted certificates, generous rate
                 limits) to try the whole chain first
  --replace      delete the current certificate first: run with it after a --staging trial
  -n, --dry-run  print the commands instead of running them
  -h, --help     show this help"

STAGING_SERVER=https://acme-staging-v02.api.letsencrypt.org/directory

certificates() {
  parse_args "$@"
  local server='' replace='' argument
  for argument in "${ARGS[@]}"; do
    case $argument in
      --staging) server=$STAGING_SERVER ;;
      --replace) replace=1 ;;
      *) unknown_argument "$argument" ;;
    esac
  done
  load_config
  require_config DOMAIN EMAIL ACME_SERVER AWS_MACHINE
  server=${server:-$ACME_SERVER}
  require_docker_machine
  require_tool docker "install the Docker CLI (docs.docker.com/engine/install)"
  use_machine "$AWS_MACHINE"
  compose build certbot
  compose_setup
  # The server is given on each command line (it wins over deploy/config.env's), so that the
  # renewal loop keeps to the server the certificate came from.
  local with_server=(env "ACME_SERVER=$server" "${COMPOSE_CMD[@]}")
  if [[ $replace ]]; then
    run "${with_server[@]}" run --rm --entrypoint certbot certbot delete --non-interactive \
      --cert-name "$DOMAIN"
  fi
  run "${with_server[@]}" run --rm certbot obtain
  run "${with_server[@]}" up -d certbot
  # nginx picks the new certificate at start (a renewal later makes it reload by itself).
  compose restart web
  is_dry_run || log "done: https://www.$DOMAIN and https://api.$DOMAIN/api/health"
}

certificates "$@"
