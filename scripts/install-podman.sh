#!/usr/bin/env bash
# Installs and configures podman/buildah for `make images`; idempotent (runs on every `make images`).
# - Debian packages: podman, buildah, runc (the runtime used here: crun is absent on some hosts and
#   fails in nested containers), mmdebstrap (builds the base image), uidmap, slirp4netns,
#   fuse-overlayfs.
# - /etc/containers/containers.conf.d/catalytic.conf: runc as the runtime, and default ulimits a
#   nested/sandboxed host can grant (podman's default nofile of 1048576 exceeds many hosts' hard
#   limit, and every `podman run` then fails).
set -euo pipefail

# catatonit: the pause process of `podman kube play`'s pods; the dnsname CNI plugin: pods on a
# podman network resolve each other by pod name (make deploy-local: a pod named like the
# Kubernetes Service it stands for).
PACKAGES=(podman buildah runc mmdebstrap uidmap slirp4netns fuse-overlayfs catatonit
  golang-github-containernetworking-plugin-dnsname)
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install-podman: installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

# nofile within this host's hard limit (a soft limit above it is refused).
hard=$(ulimit -Hn)
if [[ $hard == unlimited || $hard -gt 65536 ]]; then hard=65536; fi
conf_dir=/etc/containers/containers.conf.d
conf="$conf_dir/catalytic.conf"
want=$(cat <<CONF
# Written by scripts/install-podman.sh (make images); rewritten when it changes.
[containers]
default_ulimits = ["nofile=${hard}:${hard}", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
)
if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$want" ]]; then
  $SUDO mkdir -p "$conf_dir"
  printf '%s\n' "$want" | $SUDO tee "$conf" >/dev/null
  echo "install-podman: wrote $conf"
fi

podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}' >/dev/null
