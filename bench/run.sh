#!/usr/bin/env bash
# Mirroring benchmark: regimen against `skopeo sync` on local Distribution
# registries (Debian's docker-registry). Prints times, ratios, request counts
# and peak memory. Needs: docker-registry, skopeo, /usr/bin/time (package `time`).
#
#   bash bench/run.sh            # everything
#   SKIP_BIG=1 bash bench/run.sh # without the 1 GiB blob
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in docker-registry skopeo /usr/bin/time ab curl; do
  command -v "$bin" >/dev/null || { echo "missing $bin: apt-get install -y docker-registry skopeo time apache2-utils curl" >&2; exit 1; }
done
cargo build --release --quiet --bin regimen --example bench_seed
REGIMEN=target/release/regimen
SEED=target/release/examples/bench_seed
WORK=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[@]} 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME -> sets PORT_NAME and PID_NAME; access log at $WORK/NAME.log.
# REGISTRY_GOGC sets the registries' Go GC target (default 100, Go's own): with the default, a
# Distribution registry on a small machine spends about half its CPU collecting garbage.
start() {
  local name=$1 port; port=$(free_port)
  mkdir -p "$WORK/$name"
  cat >"$WORK/$name.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {cache: {blobdescriptor: inmemory}, filesystem: {rootdirectory: $WORK/$name}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
  GOGC=${REGISTRY_GOGC:-100} docker-registry serve "$WORK/$name.yml" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  printf -v "PID_$name" '%s' "$!"
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  printf -v "PORT_$name" '%s' "$port"
}
requests() { grep -c 'response completed' "$WORK/$1.log" || true; }
# CPU seconds a registry process has used so far
cpu() { local pid_var="PID_$1"; awk -v t="$(getconf CLK_TCK)" '{print ($14+$15)/t}' "/proc/${!pid_var}/stat"; }
# server floor: CPU seconds the registries spent serving a run, spread over every core. No client
# can finish that run sooner on this machine, however little work it does itself.
floor_of() { python3 -c "print(f'{($1)/$(nproc):.2f}')"; }
now() { date +%s.%N; }
ratio() { python3 -c "print(f'{$1/$2:.1f}x')"; }

start src; start dst; start sky; start bare
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
# The same mirror without looking for referrers: the work `skopeo sync` does (it copies no
# signatures or SBOMs), into a registry of its own so that it is cold too.
mkdir -p "$WORK/bare"
sed -e "s#127.0.0.1:$PORT_dst#127.0.0.1:$PORT_bare#" -e '/from:/ s#}$#, referrers: false}#' \
  "$WORK/policy/mirror.yaml" >"$WORK/bare/mirror.yaml"
{
  echo "127.0.0.1:$PORT_src:"
  echo "  tls-verify: false"
  echo "  images:"
  for r in $(seq -w 0 19); do echo "    bench/repo$r: []"; done
} >"$WORK/sync.yaml"

cold_src0=$(requests src); cold_dst0=$(requests dst); c0s=$(cpu src); c0d=$(cpu dst)
t0=$(now); $REGIMEN apply --auto-approve -q -C "$WORK/policy" >/dev/null; t1=$(now)
reg_cold=$(python3 -c "print($t1-$t0)")
cold_floor=$(floor_of "$(cpu src)-$c0s+$(cpu dst)-$c0d")
before_src=$(requests src); before_dst=$(requests dst); c0s=$(cpu src); c0d=$(cpu dst)
cold_requests="$((before_src - cold_src0)) + $((before_dst - cold_dst0))"
t0=$(now); $REGIMEN apply --auto-approve -q -C "$WORK/policy" >/dev/null; t1=$(now)
reg_noop=$(python3 -c "print($t1-$t0)")
noop_floor=$(floor_of "$(cpu src)-$c0s+$(cpu dst)-$c0d")
noop_requests=$(( $(requests src) - before_src + $(requests dst) - before_dst ))
floor=$(( 2 * (20 + 200) ))

c0s=$(cpu src); c0d=$(cpu bare); bare_src0=$(requests src); bare_dst0=$(requests bare)
t0=$(now); $REGIMEN apply --auto-approve -q -C "$WORK/bare" >/dev/null; t1=$(now)
bare_requests="$(( $(requests src) - bare_src0 )) + $(( $(requests bare) - bare_dst0 ))"
reg_bare=$(python3 -c "print($t1-$t0)")
bare_floor=$(floor_of "$(cpu src)-$c0s+$(cpu bare)-$c0d")

t0=$(now); skopeo sync --src yaml --dest docker --dest-tls-verify=false "$WORK/sync.yaml" "127.0.0.1:$PORT_sky/" >/dev/null 2>&1; t1=$(now)
sky_cold=$(python3 -c "print($t1-$t0)")
t0=$(now); skopeo sync --src yaml --dest docker --dest-tls-verify=false "$WORK/sync.yaml" "127.0.0.1:$PORT_sky/" >/dev/null 2>&1; t1=$(now)
sky_noop=$(python3 -c "print($t1-$t0)")

printf '\n%-28s %10s %10s %8s %14s\n' "200 tags, 20 repos" regimen "skopeo" ratio "server floor"
printf '%-28s %9.2fs %9.2fs %8s %13ss\n' "cold mirror" "$reg_cold" "$sky_cold" "$(ratio "$sky_cold" "$reg_cold")" "$cold_floor"
printf '%-28s %9.2fs %9.2fs %8s %13ss\n' "cold, referrers: false" "$reg_bare" "$sky_cold" "$(ratio "$sky_cold" "$reg_bare")" "$bare_floor"
printf '%-28s %9.2fs %9.2fs %8s %13ss\n' "no-op re-run" "$reg_noop" "$sky_noop" "$(ratio "$sky_noop" "$reg_noop")" "$noop_floor"
printf '%-28s %10s (floor %s, %s of floor)\n' "no-op requests" "$noop_requests" "$floor" "$(ratio "$noop_requests" "$floor")"
printf '%-28s %10s (source + target)\n' "cold mirror requests" "$cold_requests"
printf '%-28s %10s (source + target)\n' "same, referrers: false" "$bare_requests"

echo; echo "seeding one repo with 5,000 tags..."
$SEED "http://127.0.0.1:$PORT_src" many
mkdir -p "$WORK/many"
printf 'registries:\n  src: {url: "http://127.0.0.1:%s"}\n  dst: {url: "http://127.0.0.1:%s"}\nmirrors:\n  - {from: src/bench/many, to: dst/bench/many}\n' "$PORT_src" "$PORT_dst" >"$WORK/many/p.yaml"
c0s=$(cpu src)
/usr/bin/time -f '%e %M' -o "$WORK/many.time" $REGIMEN plan -q -C "$WORK/many" >/dev/null
read -r secs kib <"$WORK/many.time"
many_floor=$(floor_of "$(cpu src)-$c0s")
printf '%-28s %9.2fs  peak %s MiB  (server floor %ss)\n' "plan of a 5,000-tag repo" "$secs" "$((kib / 1024))" "$many_floor"
# The same number of manifest HEADs from ab, a minimal C client that does nothing else (one
# manifest, 8 keep-alive connections, as regimen's default concurrency): how fast this registry
# answers 5,000 HEADs at all.
tag=$(curl -fs "http://127.0.0.1:$PORT_src/v2/bench/many/tags/list?n=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tags"][0])')
ab_secs=$(ab -q -n 5000 -c 8 -k -i -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://127.0.0.1:$PORT_src/v2/bench/many/manifests/$tag" | awk '/Time taken for tests/ {print $5}')
printf '%-28s %9.2fs\n' "5,000 HEADs with ab" "$ab_secs"

if [ -z "${SKIP_BIG:-}" ]; then
  echo; echo "seeding one 1 GiB layer..."
  $SEED "http://127.0.0.1:$PORT_src" big
  mkdir -p "$WORK/big"
  printf 'registries:\n  src: {url: "http://127.0.0.1:%s"}\n  dst: {url: "http://127.0.0.1:%s"}\nmirrors:\n  - {from: src/bench/big, to: dst/bench/big}\n' "$PORT_src" "$PORT_dst" >"$WORK/big/p.yaml"
  /usr/bin/time -f '%e %M' -o "$WORK/big.time" $REGIMEN apply --auto-approve -q -C "$WORK/big" >/dev/null
  read -r secs kib <"$WORK/big.time"
  printf '%-28s %9.2fs  peak %s MiB\n' "copy of a 1 GiB blob" "$secs" "$((kib / 1024))"
fi
