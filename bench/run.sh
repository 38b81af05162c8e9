#!/usr/bin/env bash
# Mirroring benchmark: regimen against `skopeo sync` on local Distribution
# registries (Debian's docker-registry). Prints times, ratios, request counts
# and peak memory. Needs: docker-registry, skopeo, /usr/bin/time (package `time`).
#
#   bash bench/run.sh            # everything
#   SKIP_BIG=1 bash bench/run.sh # without the 1 GiB blob
#   REPEAT=5 bash bench/run.sh   # medians of 5 runs (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in docker-registry skopeo /usr/bin/time ab curl; do
  command -v "$bin" >/dev/null || { echo "missing $bin: apt-get install -y docker-registry skopeo time apache2-utils curl" >&2; exit 1; }
done
cargo build --release --quiet --bin regimen --example bench_seed
REGIMEN=target/release/regimen
SEED=target/release/examples/bench_seed
# The registries store on tmpfs (/dev/shm) when it has room: the benchmark measures the clients,
# and on a small VM's virtual disk the target registry's CPU for the same uploads varies up to
# 2x from run to run (kernel time in its writes). BENCH_DIR=/tmp measures on disk instead.
if [ -z "${BENCH_DIR:-}" ] && [ -w /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt 4194304 ]; then
  BENCH_DIR=/dev/shm
fi
WORK=$(mktemp -d -p "${BENCH_DIR:-/tmp}")
echo "registries store under $WORK"
PIDS=()
trap 'kill ${PIDS[@]} 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

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
# every request, from the access log (the app log's "response completed" misses requests to routes
# the registry does not have, such as the referrers API on Distribution 2.8)
requests() { grep -cE '^[0-9.:]+ - - \[[^]]*\] "[A-Z]+ ' "$WORK/$1.log" || true; }
# CPU seconds a registry process has used so far
cpu() { local pid_var="PID_$1"; awk -v t="$(getconf CLK_TCK)" '{print ($14+$15)/t}' "/proc/${!pid_var}/stat"; }
# server floor: CPU seconds the registries spent serving a run, spread over every core. No client
# can finish that run sooner on this machine, however little work it does itself.
floor_of() { python3 -c "print(f'{($1)/$(nproc):.2f}')"; }
now() { date +%s.%N; }
ratio() { python3 -c "print(f'{$1/$2:.1f}x')"; }

# median of the numbers given, and their range: "median (min-max)"
stats() { python3 -c "import sys,statistics as s; v=sorted(map(float,sys.argv[1:])); print(f'{s.median(v):.2f} {v[0]:.2f} {v[-1]:.2f}')" "$@"; }
REPEAT=${REPEAT:-3}
# regimen's tag cache (what each tag held last run, for conditional HEADs) lives in the work
# folder, one per measure below, so that every cold run starts without one. `nocache` runs
# regimen without it.
export REGIMEN_CACHE_DIR="$WORK/cache"
nocache() { REGIMEN_CACHE_DIR= "$@"; }

start src
echo "seeding 20 repos x 10 tags (64 KiB layers)..."
$SEED "http://127.0.0.1:$PORT_src" set

# Each repetition mirrors into fresh registries, so that every cold run is cold. Registries are
# named per repetition (dst1, sky1, ...); the policy files are written for each.
policy_for() { # policy_for DIR TARGET_PORT [referrers: false]
  mkdir -p "$1"
  {
    echo "registries:"
    echo "  src: {url: \"http://127.0.0.1:$PORT_src\"}"
    echo "  dst: {url: \"http://127.0.0.1:$2\"}"
    echo "mirrors:"
    for r in $(seq -w 0 19); do
      echo "  - {from: src/bench/repo$r, to: dst/bench/repo$r${3:+, referrers: false}}"
    done
  } >"$1/mirror.yaml"
}
{
  echo "127.0.0.1:$PORT_src:"
  echo "  tls-verify: false"
  echo "  images:"
  for r in $(seq -w 0 19); do echo "    bench/repo$r: []"; done
} >"$WORK/sync.yaml"
stop() { local pid_var="PID_$1"; kill "${!pid_var}" 2>/dev/null || true; rm -rf "${WORK:?}/$1"; }

COLD=(); NOOP=(); NOOP_NC=(); NOOP_NC_FLOOR=(); BARE=(); SKY_COLD=(); SKY_NOOP=(); COLD_FLOOR=(); NOOP_FLOOR=(); BARE_FLOOR=()
for rep in $(seq "$REPEAT"); do
  dst=dst$rep; bare=bare$rep; sky=sky$rep
  export REGIMEN_CACHE_DIR="$WORK/cache$rep"
  start "$dst"; start "$bare"; start "$sky"
  dport="PORT_$dst"; bport="PORT_$bare"; sport="PORT_$sky"
  policy_for "$WORK/policy$rep" "${!dport}"
  # The same mirror without looking for referrers: the work `skopeo sync` does (it copies no
  # signatures or SBOMs), into a registry of its own so that it is cold too.
  policy_for "$WORK/bare$rep" "${!bport}" no-referrers

  cold_src0=$(requests src); cold_dst0=$(requests "$dst"); c0s=$(cpu src); c0d=$(cpu "$dst")
  t0=$(now); $REGIMEN apply --auto-approve -q -C "$WORK/policy$rep" >/dev/null; t1=$(now)
  COLD+=("$(python3 -c "print($t1-$t0)")")
  COLD_FLOOR+=("$(floor_of "$(cpu src)-$c0s+$(cpu "$dst")-$c0d")")
  cold_requests="$(( $(requests src) - cold_src0 )) + $(( $(requests "$dst") - cold_dst0 ))"
  # The no-op re-run with the tag cache the cold run left, and the same with the cache off (a
  # fresh CI runner; it writes no cache, so the order does not change what the other finds); the
  # two alternate which goes first from one repetition to the next.
  noop_cached() {
    before_src=$(requests src); before_dst=$(requests "$dst"); c0s=$(cpu src); c0d=$(cpu "$dst")
    t0=$(now); $REGIMEN apply --auto-approve -q -C "$WORK/policy$rep" >/dev/null; t1=$(now)
    NOOP+=("$(python3 -c "print($t1-$t0)")")
    NOOP_FLOOR+=("$(floor_of "$(cpu src)-$c0s+$(cpu "$dst")-$c0d")")
    noop_requests=$(( $(requests src) - before_src + $(requests "$dst") - before_dst ))
  }
  noop_plain() {
    c0s=$(cpu src); c0d=$(cpu "$dst")
    t0=$(now); nocache $REGIMEN apply --auto-approve -q -C "$WORK/policy$rep" >/dev/null; t1=$(now)
    NOOP_NC+=("$(python3 -c "print($t1-$t0)")")
    NOOP_NC_FLOOR+=("$(floor_of "$(cpu src)-$c0s+$(cpu "$dst")-$c0d")")
  }
  if [ $((rep % 2)) = 1 ]; then noop_cached; noop_plain; else noop_plain; noop_cached; fi

  c0s=$(cpu src); c0d=$(cpu "$bare"); bare_src0=$(requests src); bare_dst0=$(requests "$bare")
  t0=$(now); REGIMEN_CACHE_DIR="$WORK/cache-bare$rep" $REGIMEN apply --auto-approve -q -C "$WORK/bare$rep" >/dev/null; t1=$(now)
  bare_requests="$(( $(requests src) - bare_src0 )) + $(( $(requests "$bare") - bare_dst0 ))"
  BARE+=("$(python3 -c "print($t1-$t0)")")
  BARE_FLOOR+=("$(floor_of "$(cpu src)-$c0s+$(cpu "$bare")-$c0d")")

  t0=$(now); skopeo sync --src yaml --dest docker --dest-tls-verify=false "$WORK/sync.yaml" "127.0.0.1:${!sport}/" >/dev/null 2>&1; t1=$(now)
  SKY_COLD+=("$(python3 -c "print($t1-$t0)")")
  t0=$(now); skopeo sync --src yaml --dest docker --dest-tls-verify=false "$WORK/sync.yaml" "127.0.0.1:${!sport}/" >/dev/null 2>&1; t1=$(now)
  SKY_NOOP+=("$(python3 -c "print($t1-$t0)")")
  # the last repetition's target stays up: the 5,000-tag plan below mirrors into it
  if [ "$rep" != "$REPEAT" ]; then stop "$dst"; fi
  stop "$bare"; stop "$sky"
  echo "run $rep of $REPEAT: regimen cold ${COLD[-1]:0:4}s, no-op ${NOOP[-1]:0:4}s; skopeo cold ${SKY_COLD[-1]:0:5}s, no-op ${SKY_NOOP[-1]:0:4}s"
done
dport="PORT_dst$REPEAT"; PORT_dst=${!dport}
floor=$(( 2 * (20 + 200) ))

# row LABEL REGIMEN_TIMES SKOPEO_TIMES FLOORS: medians, ratio of medians, and regimen's range
row() {
  read -r rm rlo rhi <<<"$(stats $2)"; read -r sm _ _ <<<"$(stats $3)"; read -r fm _ _ <<<"$(stats $4)"
  printf '%-24s %7ss %-13s %7ss %7s %8ss\n' "$1" "$rm" "($rlo-$rhi)" "$sm" "$(ratio "$sm" "$rm")" "$fm"
}
printf '\n200 tags, 20 repos: medians of %s runs (regimen range in brackets)\n' "$REPEAT"
printf '%-24s %8s %-13s %8s %7s %9s\n' "" regimen "" skopeo ratio "floor"
row "cold mirror" "${COLD[*]}" "${SKY_COLD[*]}" "${COLD_FLOOR[*]}"
row "cold, referrers: false" "${BARE[*]}" "${SKY_COLD[*]}" "${BARE_FLOOR[*]}"
row "no-op re-run" "${NOOP[*]}" "${SKY_NOOP[*]}" "${NOOP_FLOOR[*]}"
row "no-op, no tag cache" "${NOOP_NC[*]}" "${SKY_NOOP[*]}" "${NOOP_NC_FLOOR[*]}"
printf '%-24s %8s (floor %s, %s of floor)\n' "no-op requests" "$noop_requests" "$floor" "$(ratio "$noop_requests" "$floor")"
printf '%-24s %8s (source + target)\n' "cold mirror requests" "$cold_requests"
printf '%-24s %8s (source + target)\n' "same, referrers: false" "$bare_requests"

echo; echo "seeding one repo with 5,000 tags..."
export REGIMEN_CACHE_DIR="$WORK/cache-many"
$SEED "http://127.0.0.1:$PORT_src" many
mkdir -p "$WORK/many"
printf 'registries:\n  src: {url: "http://127.0.0.1:%s"}\n  dst: {url: "http://127.0.0.1:%s"}\nmirrors:\n  - {from: src/bench/many, to: dst/bench/many}\n' "$PORT_src" "$PORT_dst" >"$WORK/many/p.yaml"
# The same number of manifest HEADs from ab, a minimal C client that does nothing else (one
# manifest, 8 keep-alive connections, as regimen's default concurrency): how fast this registry
# answers 5,000 HEADs at all. Runs alternate with regimen's, so both see the same machine.
tag=$(curl -fs "http://127.0.0.1:$PORT_src/v2/bench/many/tags/list?n=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tags"][0])')
MANY=(); MANY_FLOOR=(); MANY_C=(); AB=(); peak=0; peak_c=0
# a first plan leaves the tag cache that the cached re-plans below use
$REGIMEN plan -q -C "$WORK/many" >/dev/null
for rep in $(seq "$REPEAT"); do
  c0s=$(cpu src)
  nocache /usr/bin/time -f '%e %M' -o "$WORK/many.time" $REGIMEN plan -q -C "$WORK/many" >/dev/null
  read -r secs kib <"$WORK/many.time"
  MANY+=("$secs"); MANY_FLOOR+=("$(floor_of "$(cpu src)-$c0s")")
  if [ "$kib" -gt "$peak" ]; then peak=$kib; fi
  /usr/bin/time -f '%e %M' -o "$WORK/many.time" $REGIMEN plan -q -C "$WORK/many" >/dev/null
  read -r secs kib <"$WORK/many.time"
  MANY_C+=("$secs")
  if [ "$kib" -gt "$peak_c" ]; then peak_c=$kib; fi
  AB+=("$(ab -q -n 5000 -c 8 -k -i -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$PORT_src/v2/bench/many/manifests/$tag" | awk '/Time taken for tests/ {print $5}')")
done
read -r mm mlo mhi <<<"$(stats "${MANY[@]}")"; read -r fm _ _ <<<"$(stats "${MANY_FLOOR[@]}")"
read -r am alo ahi <<<"$(stats "${AB[@]}")"; read -r cm clo chi <<<"$(stats "${MANY_C[@]}")"
printf '%-28s %6ss (%s-%s)  peak %s MiB  (server floor %ss)\n' "plan of a 5,000-tag repo" "$mm" "$mlo" "$mhi" "$((peak / 1024))" "$fm"
printf '%-28s %6ss (%s-%s)  peak %s MiB\n' "same, with the tag cache" "$cm" "$clo" "$chi" "$((peak_c / 1024))"
printf '%-28s %6ss (%s-%s)\n' "5,000 HEADs with ab" "$am" "$alo" "$ahi"

echo; echo "seeding one repo with 2,000 tags, one image each..."
$SEED "http://127.0.0.1:$PORT_src" aged
mkdir -p "$WORK/aged"
printf 'registries:\n  src: {url: "http://127.0.0.1:%s"}\nretention:\n  - {name: ci, repos: [src/bench/aged], delete: {tags: {glob: "build-*"}}, keep: {newest: 1000}, max_deletes: 2000}\n' "$PORT_src" >"$WORK/aged/p.yaml"
r0=$(requests src)
/usr/bin/time -f '%e %M' -o "$WORK/aged.time" $REGIMEN apply --auto-approve -q -C "$WORK/aged" >/dev/null
read -r secs kib <"$WORK/aged.time"
printf '%-28s %6.2fs  %s requests  peak %s MiB\n' "retention: 1,000 of 2,000" "$secs" "$(($(requests src) - r0))" "$((kib / 1024))"

if [ -z "${SKIP_BIG:-}" ]; then
  echo; echo "seeding one 1 GiB layer..."
  $SEED "http://127.0.0.1:$PORT_src" big
  mkdir -p "$WORK/big"
  printf 'registries:\n  src: {url: "http://127.0.0.1:%s"}\n  dst: {url: "http://127.0.0.1:%s"}\nmirrors:\n  - {from: src/bench/big, to: dst/bench/big}\n' "$PORT_src" "$PORT_dst" >"$WORK/big/p.yaml"
  /usr/bin/time -f '%e %M' -o "$WORK/big.time" $REGIMEN apply --auto-approve -q -C "$WORK/big" >/dev/null
  read -r secs kib <"$WORK/big.time"
  printf '%-28s %9.2fs  peak %s MiB\n' "copy of a 1 GiB blob" "$secs" "$((kib / 1024))"
fi
