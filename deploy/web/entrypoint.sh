#!/usr/bin/env bash
# The web container's entrypoint: render the nginx templates (deploy/nginx/) from the
# environment, write the page's config.js, serve a self-signed placeholder certificate until
# certbot has delivered the real one, reload nginx whenever certbot's deploy hook signals a new
# certificate, and run nginx in the foreground (it becomes this process: PID 1 in the container).
set -euo pipefail
[[ ${TRACE:-} ]] && set -x

USAGE="usage: entrypoint.sh [run|check|--help]
  run (default)  render the configuration, then run nginx in the foreground
  check          render the configuration, then test it with nginx -t

Environment (defaults are the web container's):
  DOMAIN                  the apex, required: www.DOMAIN is the page, api.DOMAIN the API
  COVFEFE_API_BASE        where the page calls the API       [https://api.DOMAIN]
  API_UPSTREAM            host:port of gunicorn               [serve:8000]
  NGINX_LISTEN_ADDRESS    address nginx listens on            [0.0.0.0]
  NGINX_HTTP_PORT         port of the http server             [80]
  NGINX_HTTPS_PORT        port of the https servers           [443]
  NGINX_PUBLIC_HTTPS_PORT https port that redirects name      [443]
  CERTS_DIR               certificates volume (certbot's)     [/etc/letsencrypt]
  ACME_WEBROOT            certbot's webroot (challenges)      [/var/www/acme]
  WEBAPP_ROOT             the page's files                    [/usr/share/covfefe/webapp]
  NGINX_TEMPLATE_DIR      the templates                       [../nginx beside this script]
  NGINX_CONF_DIR          the rendered configuration          [/etc/nginx/covfefe]
  NGINX_STATE_DIR         pid, temporary files, certificates  [/var/cache/nginx/covfefe]
  NGINX_ACCESS_LOG        access log                          [/dev/stdout]
  NGINX_ERROR_LOG         error log (a file or stderr)        [stderr]
  NGINX_RESOLVER          DNS server for API_UPSTREAM         [127.0.0.11, Docker's]
  NGINX_MIME_TYPES        nginx's mime.types                  [/etc/nginx/mime.types]
  NGINX_USER              workers' user when started as root  [nginx]
  WEB_RELOAD_CHECK_SECONDS  how often to look for a renewal   [60]"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The variables the templates may use; envsubst replaces these and nothing else, so nginx's own
# $variables survive.
TEMPLATE_VARS=(DOMAIN COVFEFE_API_BASE API_UPSTREAM NGINX_LISTEN_ADDRESS NGINX_HTTP_PORT
  NGINX_HTTPS_PORT HTTPS_PORT_SUFFIX ACME_WEBROOT WEBAPP_ROOT SSL_CERTIFICATE SSL_CERTIFICATE_KEY
  NGINX_CONF_DIR NGINX_STATE_DIR NGINX_ACCESS_LOG NGINX_ERROR_LOG NGINX_RESOLVER NGINX_MIME_TYPES
  NGINX_USER_DIRECTIVE NGINX_HTTP2)

log() {
  printf 'entrypoint: %s\n' "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

# Read the environment, apply the defaults and refuse values that would break the configuration.
configure() {
  DOMAIN=${DOMAIN:-}
  [[ $DOMAIN =~ ^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z0-9]$ ]] ||
    die "DOMAIN must be a lower-case domain name such as example.org, not '$DOMAIN'"
  COVFEFE_API_BASE=${COVFEFE_API_BASE:-https://api.$DOMAIN}
  [[ $COVFEFE_API_BASE =~ ^https?://[A-Za-z0-9.-]+(:[0-9]+)?$ ]] ||
    die "COVFEFE_API_BASE must be an origin such as https://api.$DOMAIN, not '$COVFEFE_API_BASE'"
  API_UPSTREAM=${API_UPSTREAM:-serve:8000}
  [[ $API_UPSTREAM =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] ||
    die "API_UPSTREAM must be host:port such as serve:8000, not '$API_UPSTREAM'"
  NGINX_LISTEN_ADDRESS=${NGINX_LISTEN_ADDRESS:-0.0.0.0}
  NGINX_HTTP_PORT=${NGINX_HTTP_PORT:-80}
  NGINX_HTTPS_PORT=${NGINX_HTTPS_PORT:-443}
  NGINX_PUBLIC_HTTPS_PORT=${NGINX_PUBLIC_HTTPS_PORT:-443}
  local port
  for port in "$NGINX_HTTP_PORT" "$NGINX_HTTPS_PORT" "$NGINX_PUBLIC_HTTPS_PORT"; do
    [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || die "ports must be numbers from 1 to 65535, not '$port'"
  done
  # The redirects name the https port unless it is the default one.
  export HTTPS_PORT_SUFFIX=
  [[ $NGINX_PUBLIC_HTTPS_PORT == 443 ]] || HTTPS_PORT_SUFFIX=:$NGINX_PUBLIC_HTTPS_PORT
  CERTS_DIR=${CERTS_DIR:-/etc/letsencrypt}
  ACME_WEBROOT=${ACME_WEBROOT:-/var/www/acme}
  WEBAPP_ROOT=${WEBAPP_ROOT:-/usr/share/covfefe/webapp}
  [[ -f $WEBAPP_ROOT/index.html ]] || die "WEBAPP_ROOT $WEBAPP_ROOT has no index.html"
  NGINX_TEMPLATE_DIR=${NGINX_TEMPLATE_DIR:-$(dirname "$HERE")/nginx}
  NGINX_CONF_DIR=${NGINX_CONF_DIR:-/etc/nginx/covfefe}
  NGINX_STATE_DIR=${NGINX_STATE_DIR:-/var/cache/nginx/covfefe}
  NGINX_ACCESS_LOG=${NGINX_ACCESS_LOG:-/dev/stdout}
  NGINX_ERROR_LOG=${NGINX_ERROR_LOG:-stderr}
  NGINX_RESOLVER=${NGINX_RESOLVER:-127.0.0.11}
  NGINX_MIME_TYPES=${NGINX_MIME_TYPES:-/etc/nginx/mime.types}
  WEB_RELOAD_CHECK_SECONDS=${WEB_RELOAD_CHECK_SECONDS:-60}
  [[ $WEB_RELOAD_CHECK_SECONDS =~ ^[1-9][0-9]*$ ]] ||
    die "WEB_RELOAD_CHECK_SECONDS must be a whole number of seconds, not '$WEB_RELOAD_CHECK_SECONDS'"

  # certbot's deploy hook (deploy/certbot/deploy-hook.sh) copies each new certificate here,
  # readable by this container's user, and touches the flag.
  WEB_CERTS_DIR=$CERTS_DIR/web
  RELOAD_FLAG=$WEB_CERTS_DIR/reload
  TLS_DIR=$NGINX_STATE_DIR/tls
  PLACEHOLDER_DIR=$NGINX_STATE_DIR/placeholder
  SSL_CERTIFICATE=$TLS_DIR/fullchain.pem
  SSL_CERTIFICATE_KEY=$TLS_DIR/privkey.pem

  # A master started as root hands the requests to an unprivileged user; the image starts as
  # that user already, where the directive would only earn a warning.
  export NGINX_USER_DIRECTIVE=
  if ((EUID == 0)); then
    NGINX_USER_DIRECTIVE="user ${NGINX_USER:-nginx};"
  fi
  # "http2 on;" came with nginx 1.25.1 (the image has 1.27); older ones (Debian's, in the
  # tests) serve HTTP/1.1 only rather than use the deprecated "listen ... http2".
  local version
  version=$(nginx -v 2>&1)
  version=${version##*/}
  version=${version%% *}
  export NGINX_HTTP2=
  if [[ $(printf '%s\n' 1.25.1 "$version" | sort -V | head -n 1) == 1.25.1 ]]; then
    NGINX_HTTP2="http2 on;"
  fi
}

# Render every template into NGINX_CONF_DIR, then write config.js beside them.
render() {
  local name template target shell_format=
  for name in "${TEMPLATE_VARS[@]}"; do
    export "${name?}"
    shell_format+="\${$name} "
  done
  mkdir -p "$NGINX_CONF_DIR" "$NGINX_STATE_DIR" "$TLS_DIR"
  shopt -s nullglob
  local templates=("$NGINX_TEMPLATE_DIR"/*.template)
  shopt -u nullglob
  ((${#templates[@]})) || die "no *.template in NGINX_TEMPLATE_DIR $NGINX_TEMPLATE_DIR"
  for template in "${templates[@]}"; do
    target=$NGINX_CONF_DIR/$(basename "$template" .template)
    envsubst "$shell_format" <"$template" >"$target"
    # A ${NAME} left outside a comment is a variable missing from TEMPLATE_VARS (or a typo).
    if grep -n "^[^#]*\${" "$target" >&2; then
      die "$target: template variables left unreplaced (see above)"
    fi
  done
  # The page reads its API address from config.js (webapp/config.js is the make-demo version);
  # nginx serves this file at /config.js, so the page's own folder stays read-only.
  printf '%s\n%s\n' \
    "// Written by deploy/web/entrypoint.sh from COVFEFE_API_BASE when the container started." \
    "window.COVFEFE_CONFIG = { apiBase: \"$COVFEFE_API_BASE\" };" >"$NGINX_CONF_DIR/config.js"
}

# A self-signed certificate for the three names, so that nginx can start (and answer certbot's
# challenges on port 80) before the first real certificate exists. Browsers reject it.
make_placeholder() {
  [[ -s $PLACEHOLDER_DIR/fullchain.pem && -s $PLACEHOLDER_DIR/privkey.pem ]] && return 0
  mkdir -p "$PLACEHOLDER_DIR"
  local output
  if ! output=$(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -days 365 -subj "/O=covfefe-flow placeholder/CN=$DOMAIN" \
    -addext "subjectAltName=DNS:$DOMAIN,DNS:www.$DOMAIN,DNS:api.$DOMAIN" \
    -keyout "$PLACEHOLDER_DIR/privkey.pem" -out "$PLACEHOLDER_DIR/fullchain.pem" 2>&1); then
    printf '%s\n' "$output" >&2
    die "openssl could not make the placeholder certificate"
  fi
  log "made a self-signed placeholder certificate for $DOMAIN, www.$DOMAIN and api.$DOMAIN"
}

# Point nginx at certbot's certificate when there is one, else at the placeholder.
use_certificate() {
  local source=$PLACEHOLDER_DIR
  if [[ -r $WEB_CERTS_DIR/fullchain.pem && -r $WEB_CERTS_DIR/privkey.pem ]]; then
    source=$WEB_CERTS_DIR
  else
    if [[ -e $WEB_CERTS_DIR/privkey.pem ]]; then
      log "warning: $WEB_CERTS_DIR/privkey.pem is not readable by uid $EUID (certbot's deploy" \
        "hook gives it to WEB_UID, 101 by default): serving the placeholder"
    fi
    make_placeholder
  fi
  ln -sfn "$source/fullchain.pem" "$SSL_CERTIFICATE"
  ln -sfn "$source/privkey.pem" "$SSL_CERTIFICATE_KEY"
  log "TLS certificate: $source/fullchain.pem"
}

nginx_cmd() {
  nginx -p "$NGINX_STATE_DIR/" -e "$NGINX_ERROR_LOG" -c "$NGINX_CONF_DIR/nginx.conf" "$@"
}

# In the background: every WEB_RELOAD_CHECK_SECONDS, reload nginx if the deploy hook has touched
# the flag since the last look. Ends when nginx (the process NGINX_PID) has gone.
watch_renewals() {
  local nginx_pid=$1 seen=$NGINX_STATE_DIR/reload.seen
  while sleep "$WEB_RELOAD_CHECK_SECONDS"; do
    kill -0 "$nginx_pid" 2>/dev/null || return 0
    [[ -e $RELOAD_FLAG && $RELOAD_FLAG -nt $seen ]] || continue
    touch -r "$RELOAD_FLAG" "$seen"
    if use_certificate && nginx_cmd -s reload; then
      log "certbot delivered a new certificate: nginx reloaded"
    else
      log "error: could not reload nginx with the new certificate (see above)"
    fi
  done
}

main() {
  local command=${1:-run}
  case $command in
    -h | --help) printf '%s\n' "$USAGE"; return 0 ;;
    run | check) ;;
    *) printf '%s\n' "$USAGE" >&2; exit 2 ;;
  esac
  command -v nginx >/dev/null || die "nginx is not installed"
  configure
  render
  use_certificate
  if [[ $command == check ]]; then
    nginx_cmd -t
    return
  fi
  # What has been delivered so far is in use: only a later touch of the flag means a renewal.
  local seen=$NGINX_STATE_DIR/reload.seen
  if [[ -e $RELOAD_FLAG ]]; then touch -r "$RELOAD_FLAG" "$seen"; else touch -d @0 "$seen"; fi
  watch_renewals "$$" &
  log "serving https://www.$DOMAIN (page), https://api.$DOMAIN (API at $API_UPSTREAM)"
  exec nginx -p "$NGINX_STATE_DIR/" -e "$NGINX_ERROR_LOG" -c "$NGINX_CONF_DIR/nginx.conf" \
    -g "daemon off;"
}

main "$@"
