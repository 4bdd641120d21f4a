#!/usr/bin/env bash
# Builds catalytic/datastores:bookworm: Debian 12 minbase with PostgreSQL 15 and Redis 7.0 for the
# dev overlay's in-cluster data stores under `make deploy-local` (no registry here, so no
# postgres:16 or redis:7 image to pull). The postgres and redis users are uid/gid 999, as the
# dev manifests' securityContext says; the entrypoint follows the official postgres image's
# environment (deploy/images/datastores/postgres-entrypoint.sh). Cached like the base image:
# rebuilt when missing, when this script or the entrypoint changed, or with FORCE=1.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${DATASTORES_IMAGE:-catalytic/datastores:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE=${IMAGES_CACHE:-.cache/images}
ENTRYPOINT=deploy/images/datastores/postgres-entrypoint.sh
recipe=$(cat "$0" "$ENTRYPOINT" | sha256sum | cut -c1-16)

if [[ -z ${FORCE:-} ]] && podman image exists "$IMAGE" &&
  [[ $(podman image inspect --format '{{index .Labels "catalytic.recipe"}}' "$IMAGE") == "$recipe" ]]; then
  echo "datastores: $IMAGE is current (FORCE=1 rebuilds)"
  exit 0
fi
mkdir -p "$CACHE"
tarball="$CACHE/datastores-bookworm.tar"
start=$SECONDS
# Users before the packages create them: Debian would pick the next free system id, the dev
# manifests say 999 (passwd is not installed yet at this point, so the files are edited).
mmdebstrap --variant=minbase --mode=root \
  --include=postgresql-15,redis-server,redis-tools,ca-certificates,tzdata \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --essential-hook='echo "postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/bash" >> "$1"/etc/passwd' \
  --essential-hook='echo "postgres:x:999:" >> "$1"/etc/group' \
  --essential-hook='echo "redis:x:998:998:Redis:/var/lib/redis:/usr/sbin/nologin" >> "$1"/etc/passwd' \
  --essential-hook='echo "redis:x:998:" >> "$1"/etc/group' \
  --customize-hook="copy-in $ENTRYPOINT /usr/local/bin" \
  --customize-hook='chmod 0755 "$1"/usr/local/bin/postgres-entrypoint.sh' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/lib/postgresql/15/main' \
  bookworm "$tarball" \
  "deb $MIRROR bookworm main" \
  "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY bookworm-security main"
podman import --quiet \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' \
  --change 'STOPSIGNAL SIGINT' \
  --change "LABEL catalytic.recipe=$recipe" \
  "$tarball" "$IMAGE" >/dev/null
rm -f "$tarball"
echo "datastores: built $IMAGE in $((SECONDS - start)) s"
