#!/usr/bin/env bash
# Mirroring benchmark: regimen against `skopeo sync` on local Distribution
# registries (Debian's docker-registry). Prints times, ratios, request counts
# and peak memory. Needs: docker-registry, skopeo, /usr/bin/time (package `time`).
#
#   bash bench/run.sh            # everything
#   SKIP_BIG=1 bash bench/run.sh # without the 1 GiB blob
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in docker-registry skopeo /usr/bin/time; do
  command -v "$bin" >/dev/null || { echo "missing $bin: apt-get install -y docker-registry skopeo time" >&2; exit 1; }
done
cargo build --release --quiet --bin regimen --example bench_seed
REGIMEN=target/release/regimen
SEED=target/release/examples/bench_seed
WORK=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[@]} 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME -> sets PORT_NAME; access log at $WORK/NAME.log
start() {
  local name=$1 port; port=$(free_port)
  mkdir -p "$WORK/$name"
  cat >"$WORK/$name.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $WORK/$name}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
  docker-registry serve "$WORK/$name.yml" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  printf -v "PORT_$name" '%s' "$port"
}
requests() { grep -c 'response completed' "$WORK/$1.log" || true; }
now() { date +%s.%N; }
ratio() { python3 -c "print(f'{$1/$2:.1f}x')"; }

start src; start dst; start sky
echo "seeding 20 repos x 10 tags (64 KiB layers)..."
$SEED "http://127.0.0.1:$PORT_src" set

mkdir -p "$WORK/policy"
{
  echo "registries:"
  echo "  src: {url: \"http://127.0.0.1:$PORT_src\"}"
  echo "  dst: {url: \"http://127.0.0.1:$PORT_dst\"}"
  echo "mirrors:"
  for r in $(seq -w 0 19); do
    echo "  - {from: src/bench/repo$r, to: dst/bench/repo$r}"
  done
} >"$WORK/policy/mirror.yaml"
{
  echo "127.0.0.1:$PORT_src:"
  echo "  tls-verify: false"
  echo "  images:"
  for r in $(seq -w 0 19); do echo "    bench/repo$r: []"; done
} >"$WORK/sync.yaml"

cold_src0=$(requests src); cold_dst0=$(requests dst)
t0=$(now); $REGIMEN apply --auto-approve -q -C "$WORK/policy" >/dev/null; t1=$(now)
reg_cold=$(python3 -c "print($t1-$t0)")
before_src=$(requests src); before_dst=$(requests dst)
cold_requests="$((before_src - cold_src0)) + $((before_dst - cold_dst0))"
t0=$(now); $REGIMEN apply --auto-approve -q -C "$WORK/policy" >/dev/null; t1=$(now)
reg_noop=$(python3 -c "print($t1-$t0)")
noop_requests=$(( $(requests src) - before_src + $(requests dst) - before_dst ))
floor=$(( 2 * (20 + 200) ))

t0=$(now); skopeo sync --src yaml --dest docker --dest-tls-verify=false "$WORK/sync.yaml" "127.0.0.1:$PORT_sky/" >/dev/null 2>&1; t1=$(now)
sky_cold=$(python3 -c "print($t1-$t0)")
t0=$(now); skopeo sync --src yaml --dest docker --dest-tls-verify=false "$WORK/sync.yaml" "127.0.0.1:$PORT_sky/" >/dev/null 2>&1; t1=$(now)
sky_noop=$(python3 -c "print($t1-$t0)")

printf '\n%-28s %10s %10s %8s\n' "200 tags, 20 repos" regimen "skopeo" ratio
printf '%-28s %9.2fs %9.2fs %8s\n' "cold mirror" "$reg_cold" "$sky_cold" "$(ratio "$sky_cold" "$reg_cold")"
printf '%-28s %9.2fs %9.2fs %8s\n' "no-op re-run" "$reg_noop" "$sky_noop" "$(ratio "$sky_noop" "$reg_noop")"
printf '%-28s %10s (floor %s, %s of floor)\n' "no-op requests" "$noop_requests" "$floor" "$(ratio "$noop_requests" "$floor")"
printf '%-28s %10s (source + target)\n' "cold mirror requests" "$cold_requests"

echo; echo "seeding one repo with 5,000 tags..."
$SEED "http://127.0.0.1:$PORT_src" many
mkdir -p "$WORK/many"
printf 'registries:\n  src: {url: "http://127.0.0.1:%s"}\n  dst: {url: "http://127.0.0.1:%s"}\nmirrors:\n  - {from: src/bench/many, to: dst/bench/many}\n' "$PORT_src" "$PORT_dst" >"$WORK/many/p.yaml"
/usr/bin/time -f '%e %M' -o "$WORK/many.time" $REGIMEN plan -q -C "$WORK/many" >/dev/null
read -r secs kib <"$WORK/many.time"
printf '%-28s %9.2fs  peak %s MiB\n' "plan of a 5,000-tag repo" "$secs" "$((kib / 1024))"

if [ -z "${SKIP_BIG:-}" ]; then
  echo; echo "seeding one 1 GiB layer..."
  $SEED "http://127.0.0.1:$PORT_src" big
  mkdir -p "$WORK/big"
  printf 'registries:\n  src: {url: "http://127.0.0.1:%s"}\n  dst: {url: "http://127.0.0.1:%s"}\nmirrors:\n  - {from: src/bench/big, to: dst/bench/big}\n' "$PORT_src" "$PORT_dst" >"$WORK/big/p.yaml"
  /usr/bin/time -f '%e %M' -o "$WORK/big.time" $REGIMEN apply --auto-approve -q -C "$WORK/big" >/dev/null
  read -r secs kib <"$WORK/big.time"
  printf '%-28s %9.2fs  peak %s MiB\n' "copy of a 1 GiB blob" "$secs" "$((kib / 1024))"
fi
