#!/usr/bin/env bash
# Builds catalytic/base:bookworm (Debian 12 minbase + python3.11, ca-certificates, tini) with
# mmdebstrap from the host's Debian mirror and imports it into podman. Cached: does nothing when
# the image exists and was built by this version of the script (FORCE=1 rebuilds). Used by
# `make images`; see deploy/images/README.md.
set -euo pipefail

IMAGE=${BASE_IMAGE:-catalytic/base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE=${IMAGES_CACHE:-.cache/images}

# The image is labelled with this script's hash: a changed recipe rebuilds it.
recipe=$(sha256sum "$0" | cut -c1-16)
if [[ -z ${FORCE:-} ]] && podman image exists "$IMAGE" &&
  [[ $(podman image inspect --format '{{index .Labels "catalytic.recipe"}}' "$IMAGE") == "$recipe" ]]; then
  echo "base: $IMAGE is current (FORCE=1 rebuilds)"
  exit 0
fi
mkdir -p "$CACHE"
tarball="$CACHE/base-bookworm.tar"
start=$SECONDS
# minbase: essential + apt; no compilers. python3 is Debian's 3.11 (the services' version).
# Documentation, manuals and locales are left out; the apt lists are removed afterwards.
mmdebstrap --variant=minbase --mode=root \
  --include=python3,ca-certificates,tini,tzdata \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$tarball" \
  "deb $MIRROR bookworm main" \
  "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY bookworm-security main"
# One variable per ENV: `ENV A=1 B=2` would import as a single variable A="1 B=2".
podman import --quiet \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "LABEL catalytic.recipe=$recipe" \
  --change 'CMD ["/bin/bash"]' \
  "$tarball" "$IMAGE" >/dev/null
rm -f "$tarball"
echo "base: built $IMAGE in $((SECONDS - start)) s"
