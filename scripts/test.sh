#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with the Rust toolchain:
# installs the system tools the tests drive (skopeo reads what regimen wrote;
# docker-registry serves real registries on loopback, htpasswd makes their
# credentials, podman serves hosts, buildah makes Podman's external containers, headless chromium renders the HTML
# inventory; openssl makes test certificates and python3 runs a TLS
# forwarder in front of a host; sshd and git serve Git remotes), then lint
# and tests. Same command locally and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v git >/dev/null 2>&1 || need+=(git)
# building: libgit2's https and ssh link OpenSSL
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# regimen's tag cache (conditional HEADs on re-runs) goes to a folder of this run, not ~/.cache.
REGIMEN_CACHE_DIR=$(mktemp -d)
export REGIMEN_CACHE_DIR
trap 'rm -rf "$REGIMEN_CACHE_DIR"' EXIT
cargo test --locked --all-targets
