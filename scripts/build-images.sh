#!/usr/bin/env bash
# `make images`: podman set up, the base (only when missing), the wheels, then
# catalytic/services:<sha> with catalytic/{auth,lattice,webhook}:<sha> (the same layers, each
# with its own command) and catalytic/gateway:<sha>; prints their sizes. deploy/images/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export IMAGES_CACHE=${IMAGES_CACHE:-.cache/images}
start=$SECONDS
bash scripts/install-podman.sh
bash scripts/build-base-image.sh
bash scripts/download-wheels.sh
sha=$(git rev-parse --short HEAD)
if [[ -n $(git status --porcelain --untracked-files=no) ]]; then sha="$sha-dirty"; fi
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
build=(podman build --quiet --layers --build-arg "GIT_SHA=$sha" --build-arg "VERSION=$version"
  --build-arg BASE=catalytic/base:bookworm)

t=$SECONDS
"${build[@]}" -f deploy/images/services.Containerfile -t "catalytic/services:$sha" . >/dev/null
echo "images: catalytic/services:$sha built in $((SECONDS - t)) s"
for service in auth lattice webhook; do
  printf 'FROM catalytic/services:%s\nCMD ["python", "-m", "services.%s"]\n' "$sha" "$service" |
    "${build[@]}" -f - -t "catalytic/$service:$sha" . >/dev/null
done
t=$SECONDS
"${build[@]}" -f deploy/images/gateway.Containerfile -t "catalytic/gateway:$sha" . >/dev/null
echo "images: catalytic/gateway:$sha built in $((SECONDS - t)) s"

echo
printf '%-34s %-14s %s\n' IMAGE ID SIZE
for name in services auth lattice webhook gateway base; do
  tag=$sha; [[ $name == base ]] && tag=bookworm
  podman image inspect --format '{{.Id}} {{.Size}}' "catalytic/$name:$tag" |
    awk -v n="catalytic/$name:$tag" '{printf "%-34s %-14s %.0f MB\n", n, substr($1, 1, 12), $2 / 1e6}'
done
echo "images: done in $((SECONDS - start)) s (auth, lattice, webhook share the services image's layers)"
