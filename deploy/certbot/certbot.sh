#!/bin/sh
# The certbot service of deploy/docker-compose.yml (image: deploy/certbot/Dockerfile). It obtains
# the certificate of DOMAIN, www.DOMAIN and api.DOMAIN from ACME_SERVER (Let's Encrypt) in
# webroot mode, the web container answering the challenges on port 80 from the shared webroot,
# then tries to renew it twice a day (certbot renews within 30 days of expiry). Every issuance
# and renewal runs deploy-hook.sh, after which the web container reloads nginx.
# POSIX sh: the certbot/certbot image (Alpine) has no bash.
set -eu
[ -n "${TRACE:-}" ] && set -x

USAGE="usage: certbot.sh [run|obtain|renew [CERTBOT-OPTIONS...]|--help]
  run (default)  obtain (retrying every CERTBOT_RETRY_SECONDS until it works), then renew
                 every CERTBOT_RENEW_SECONDS, until stopped
  obtain         obtain the certificate; one that is not due for renewal is kept as it is
  renew          one 'certbot renew' (options such as --force-renewal go to certbot)

Environment: DOMAIN and EMAIL (required for obtain), ACME_SERVER [Let's Encrypt],
ACME_WEBROOT [/var/www/acme], CERTBOT_CONFIG_DIR [/etc/letsencrypt: the certificates volume],
CERTBOT_WORK_DIR [/var/lib/letsencrypt], CERTBOT_LOGS_DIR [/var/log/letsencrypt],
CERTBOT_RENEW_SECONDS [43200], CERTBOT_RETRY_SECONDS [3600]; WEB_UID, WEB_GID [101] for the hook."

HERE=$(cd "$(dirname "$0")" && pwd)
ACME_SERVER=${ACME_SERVER:-https://acme-v02.api.letsencrypt.org/directory}
ACME_WEBROOT=${ACME_WEBROOT:-/var/www/acme}
CERTBOT_CONFIG_DIR=${CERTBOT_CONFIG_DIR:-/etc/letsencrypt}
CERTBOT_WORK_DIR=${CERTBOT_WORK_DIR:-/var/lib/letsencrypt}
CERTBOT_LOGS_DIR=${CERTBOT_LOGS_DIR:-/var/log/letsencrypt}
CERTBOT_RENEW_SECONDS=${CERTBOT_RENEW_SECONDS:-43200}
# Let's Encrypt allows 5 failed validations per name and hour: never retry faster than that.
CERTBOT_RETRY_SECONDS=${CERTBOT_RETRY_SECONDS:-3600}

log() {
  echo "certbot.sh: $*" >&2
}

certbot_cmd() {
  certbot --non-interactive --config-dir "$CERTBOT_CONFIG_DIR" --work-dir "$CERTBOT_WORK_DIR" \
    --logs-dir "$CERTBOT_LOGS_DIR" "$@"
}

obtain() {
  : "${DOMAIN:?certbot.sh: set DOMAIN (the apex, e.g. example.org)}"
  : "${EMAIL:?certbot.sh: set EMAIL (the ACME account e-mail, for expiry warnings)}"
  mkdir -p "$ACME_WEBROOT"
  # The hook is stored in the renewal configuration, so that renewals run it too. ("|| return":
  # run calls obtain as a condition, where set -e does not stop at a failure.)
  certbot_cmd certonly --webroot --webroot-path "$ACME_WEBROOT" --cert-name "$DOMAIN" \
    -d "$DOMAIN" -d "www.$DOMAIN" -d "api.$DOMAIN" --server "$ACME_SERVER" \
    --email "$EMAIL" --agree-tos --no-eff-email --keep-until-expiring \
    --deploy-hook "sh '$HERE/deploy-hook.sh'" || return
  # A certificate obtained before the web copy existed (or before this image): hand it over.
  lineage=$CERTBOT_CONFIG_DIR/live/$DOMAIN
  if [ -e "$lineage/fullchain.pem" ] && [ ! -e "$CERTBOT_CONFIG_DIR/web/fullchain.pem" ]; then
    RENEWED_LINEAGE=$lineage RENEWED_DOMAINS="$DOMAIN www.$DOMAIN api.$DOMAIN" \
      sh "$HERE/deploy-hook.sh" || return
  fi
}

renew() {
  certbot_cmd renew "$@"
}

# sleep in the background: `docker compose stop` (SIGTERM) ends the wait at once.
pause() {
  sleep "$1" &
  wait $!
}

run() {
  trap 'exit 0' TERM INT
  until obtain; do
    log "no certificate yet (see above: do the names point at this host, is port 80 open?);" \
      "next try in $CERTBOT_RETRY_SECONDS s"
    pause "$CERTBOT_RETRY_SECONDS"
  done
  while :; do
    pause "$CERTBOT_RENEW_SECONDS"
    renew || log "renewal failed (see above); next try in $CERTBOT_RENEW_SECONDS s"
  done
}

case ${1:-run} in
  -h | --help) echo "$USAGE" ;;
  run) run ;;
  obtain) obtain ;;
  renew) shift; renew "$@" ;;
  *) echo "$USAGE" >&2; exit 2 ;;
esac
