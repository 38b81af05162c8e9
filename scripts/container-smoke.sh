#!/usr/bin/env bash
# Builds the regimen image with the repository's Containerfile and runs
# `regimen run --plan-only --once` in it against a throwaway docker-registry,
# from a local directory and from a Git remote.
#
# For machines that cannot pull base images: the bases are made locally with
# debootstrap + `podman import`, and the build stage uses the host's Rust
# toolchain and crate cache (mounted, offline). With registry access, just
# `podman build -t regimen .` instead.
#
# Needs root (debootstrap), podman, debootstrap, docker-registry, skopeo, git.
# Not part of scripts/test.sh: it takes minutes and needs the Debian mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${DEBIAN_SUITE:-bookworm}"
WORK="${SMOKE_DIR:-/tmp/regimen-container-smoke}"
BASE=localhost/regimen-smoke/debian:$SUITE
BUILDER=localhost/regimen-smoke/rust-builder:$SUITE
IMAGE=localhost/regimen:smoke
mkdir -p "$WORK"

# Podman's defaults set rlimits and pick crun; sandboxes like this one refuse
# the rlimits and have runc. Use a containers.conf that says so, unless the
# caller brings their own.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  printf '%s\n' '[engine]' 'runtime = "runc"' 'cgroup_manager = "cgroupfs"' 'events_logger = "file"' \
    '[containers]' 'default_ulimits = []' >"$WORK/containers.conf"
  export CONTAINERS_CONF="$WORK/containers.conf"
fi

if ! podman image exists "$BASE"; then
  echo "== debootstrap $SUITE (minbase) from $MIRROR"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log"
  tar -C "$WORK/rootfs" -c . | podman import - "$BASE"
  rm -rf "$WORK/rootfs"
fi

if ! podman image exists "$BUILDER"; then
  echo "== builder image (C toolchain, libssl-dev; Rust comes from the host, mounted)"
  printf '%s\n' \
    "FROM $BASE" \
    "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev make pkg-config libssl-dev ca-certificates && rm -rf /var/lib/apt/lists/*" \
    "ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    | podman build --network host -t "$BUILDER" -f - "$WORK"
fi

echo "== podman build $IMAGE"
mkdir -p target/container
podman build --network host \
  -v "${CARGO_HOME:-$HOME/.cargo}:/usr/local/cargo" \
  -v "${RUSTUP_HOME:-$HOME/.rustup}:/usr/local/rustup" \
  -v "$PWD/target/container:/src/target" \
  --build-arg RUST_IMAGE="$BUILDER" \
  --build-arg RUNTIME_IMAGE="$BASE" \
  --build-arg CARGO_NET_OFFLINE=true \
  -t "$IMAGE" -f Containerfile .
podman image inspect "$IMAGE" --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} size={{.Size}}'
# The CI recipes (examples/ci) run git and curl in the image.
podman run --rm --entrypoint sh "$IMAGE" -c 'git --version && curl --version | head -1'

echo "== a test registry with one image"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG="$WORK/registry"
rm -rf "$REG" && mkdir -p "$REG"
cat >"$REG/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $REG/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT}
YAML
/usr/bin/docker-registry serve "$REG/config.yml" >"$REG/log" 2>&1 &
REG_PID=$!
trap 'kill $REG_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy -q --all --preserve-digests --dest-tls-verify=false \
  oci:examples/quickstart/upstream/library/alpine:3.18.0 \
  "docker://127.0.0.1:$PORT/library/alpine:3.18.0"

POLICY="$WORK/policy"
rm -rf "$POLICY" && mkdir -p "$POLICY"
cat >"$POLICY/regimen.yaml" <<YAML
registries:
  dev: {url: "http://127.0.0.1:$PORT"}
mirrors:
  - {name: alpine, from: dev/library/alpine, to: dev/mirror/alpine}
YAML
chmod -R a+rX "$POLICY"

# in_image SRC DEST ARGS...: runs the image's entrypoint with SRC mounted at DEST.
in_image() {
  local src=$1 dest=$2; shift 2
  podman run --rm --network host -v "$src:$dest:ro" "$IMAGE" "$@" 2>&1
}

echo "== regimen run --plan-only --once -C /policy (in the image)"
in_image "$POLICY" /policy --log-format text run -C /policy --plan-only --once | tee "$WORK/run-dir.log"
grep -q "Plan: 1 to copy" "$WORK/run-dir.log"

echo "== regimen run --plan-only --once --git file:///repo.git (in the image)"
rm -rf "$WORK/git" && mkdir -p "$WORK/git/work"
git -C "$WORK/git" init -q --bare -b main repo.git
git -C "$WORK/git/work" init -q -b main
cp "$POLICY/regimen.yaml" "$WORK/git/work/"
git -C "$WORK/git/work" -c user.name=smoke -c user.email=smoke@example.com commit -q --allow-empty -m init
git -C "$WORK/git/work" add -A
git -C "$WORK/git/work" -c user.name=smoke -c user.email=smoke@example.com commit -q -m policy
git -C "$WORK/git/work" push -q "$WORK/git/repo.git" main
# Git refuses repositories owned by another user: hand it to the image's.
chown -R "$(podman image inspect "$IMAGE" --format '{{.Config.User}}')" "$WORK/git/repo.git"
in_image "$WORK/git/repo.git" /repo.git --log-format text run --git file:///repo.git --branch main --plan-only --once | tee "$WORK/run-git.log"
grep -q "Plan: 1 to copy" "$WORK/run-git.log"
echo "container smoke test: OK"
