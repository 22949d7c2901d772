#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/03-dns.sh [--dry-run] [OPTIONS OF deploy/cloudflare_dns.py]

Step 3: point DOMAIN at the EC2 host in Cloudflare: A records for DOMAIN and www.DOMAIN through
Cloudflare's CDN (proxied), api.DOMAIN straight to the host (DNS only), all at the address that
\`docker-machine ip AWS_MACHINE\` gives. Idempotent: run it again if the host's address changes.
Other options go to deploy/cloudflare_dns.py.

Options:
  -n, --dry-run  print the commands instead of running them
  -h, --help     show this help

Needs CLOUDFLARE_API_TOKEN (deploy/deploy.secrets.env), a token allowed to edit the zone's DNS,
and the project's Python with the cloudflare SDK (pip install -e '.[deploy]')."

dns() {
  parse_args "$@"
  load_config
  require_config DOMAIN AWS_MACHINE
  require_secret CLOUDFLARE_API_TOKEN
  require_docker_machine
  local ip
  capture ip "<$AWS_MACHINE-ip>" "is the host running? (docker-machine ls)" \
    docker-machine ip "$AWS_MACHINE"
  if ! is_dry_run && [[ ! $ip =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; then
    die "docker-machine ip $AWS_MACHINE gave '$ip', not an IPv4 address"
  fi
  run "$(python_command)" deploy/cloudflare_dns.py --ip "$ip" --zone "$DOMAIN" "${ARGS[@]}"
  is_dry_run || log "next: deploy/04-up.sh"
}

dns "$@"
