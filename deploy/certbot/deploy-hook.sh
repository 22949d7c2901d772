#!/bin/sh
# certbot's deploy hook (certbot.sh passes it with --deploy-hook; certbot keeps it in the
# renewal configuration): runs after every issuance and renewal, with RENEWED_LINEAGE set to
# the certificate's live/ folder. It copies the certificate and key to web/ beside live/ on the
# certificates volume, readable by the web container's non-root nginx (certbot's own files are
# root's alone), then touches web/reload; the web container reloads nginx when it sees that.
# POSIX sh: it runs in the certbot/certbot image (Alpine), which has no bash.
set -eu
[ -n "${TRACE:-}" ] && set -x

lineage=${RENEWED_LINEAGE:?"deploy-hook.sh: RENEWED_LINEAGE is not set (certbot sets it for deploy hooks)"}
# live/NAME -> the configuration folder (the certificates volume).
certs_dir=$(dirname "$(dirname "$lineage")")
web_dir=$certs_dir/web
# The nginx user of the nginx image (deploy/web/Dockerfile).
web_uid=${WEB_UID:-101}
web_gid=${WEB_GID:-101}

mkdir -p "$web_dir"
chmod 755 "$web_dir"
umask 077
# Copy beside, then rename: nginx never reads a half-written file.
cp -L "$lineage/fullchain.pem" "$web_dir/fullchain.pem.new"
cp -L "$lineage/privkey.pem" "$web_dir/privkey.pem.new"
chmod 644 "$web_dir/fullchain.pem.new"
chmod 600 "$web_dir/privkey.pem.new"
if [ "$(id -u)" = 0 ]; then
  chown "$web_uid:$web_gid" "$web_dir/fullchain.pem.new" "$web_dir/privkey.pem.new"
fi
mv -f "$web_dir/fullchain.pem.new" "$web_dir/fullchain.pem"
mv -f "$web_dir/privkey.pem.new" "$web_dir/privkey.pem"
touch "$web_dir/reload"
echo "deploy-hook.sh: certificate for ${RENEWED_DOMAINS:-$lineage} handed to the web container," \
  "which reloads nginx within a minute"
