#!/usr/bin/env bash
# The cache's cluster mode, measured with the real binary: three nodes on
# 127.0.0.1 (own HTTP and cluster ports, replication 2), N values of SIZE
# bytes PUT through them, then
#  1. forwarding overhead: wrk -t1 -c16 --latency GET of one key through a
#     node that owns it against through the node that does not (found with
#     X-ElCache-No-Cluster GETs, which read only the node asked), interleaved
#     over ROUNDS rounds (the order swapped each round); req/s, p50, p99 and
#     the ratios of the medians, with the forwarded requests each node
#     counted (its JSON /metrics) as the check that the path was the one
#     meant;
#  2. kill -9 of one node: the time from the kill to the end of the first
#     full pass in which every one of the N keys came back 200 with its
#     bytes through each surviving node (curl, keep-alive, one pass per
#     node at a time), the time until both survivors report two live nodes
#     (/cluster polled every 20 ms), and the nodes' own failure detection
#     times (/cluster's failure_detection_ms).
# Build first and run with nothing else on the machine:
#   cargo build --release --example cache && examples/cache/measure-cluster.sh
# Knobs (environment): N (1000), SIZE (4096), SECS (5, per wrk run), ROUNDS
# (3), PORT_BASE (7580: HTTP PORT_BASE+1..3, cluster PORT_BASE+11..13),
# WORKERS (application workers per node; the pool's default if unset),
# CACHE_BIN (the binary; default the release build), SMOKE=1 (N=20, SECS=1,
# ROUNDS=1: a check that it all works, its figures mean nothing). Every wait
# and loop is bounded; the exit status is 1 if any step fails.
# Needs wrk, curl and python3 (apt-get install wrk curl python3).
set -u
cd "$(dirname "$0")/../.."
C=${CACHE_BIN:-${CARGO_TARGET_DIR:-target}/release/examples/cache}
N=${N:-1000}
SIZE=${SIZE:-4096}
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
BASE=${PORT_BASE:-7580}
if [ "${SMOKE:-0}" = 1 ]; then N=20 SECS=1 ROUNDS=1; fi
# The most a step may take: to form the cluster, for keys to be served
# again, for the failure to be detected.
DEADLINE=${DEADLINE:-60}
for t in wrk curl python3; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
[ -x "$C" ] || { echo "build first: cargo build --release --example cache (or set CACHE_BIN)"; exit 1; }
D=$(mktemp -d /dev/shm/cache-cluster.XXXX 2>/dev/null || mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  [ -n "${POLLER:-}" ] && kill "$POLLER" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$D"
}
trap cleanup EXIT
die() { echo "measure-cluster: $*"; for i in 1 2 3; do [ -f $D/node$i.log ] && { echo "--- node $i"; tail -20 $D/node$i.log; }; done; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
http() { echo $((BASE + $1)); }
clus() { echo $((BASE + 10 + $1)); }
# A counter of node $1's JSON /metrics cluster block (empty if none).
mfield() {
  curl -s -m 5 -H 'Accept: application/json' "http://127.0.0.1:$(http $1)/metrics" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['cluster']['$2'])" 2>/dev/null
}
# Fails unless every argument is a whole number.
numbers() { for v in "$@"; do case $v in ''|*[!0-9]*) die "not a count: '$v'" ;; esac; done; }

# --- three nodes
start_node() {
  local i=$1; shift
  local env=()
  [ -n "${WORKERS:-}" ] && env=(SHARED_NOTHING_APP_WORKERS=$WORKERS)
  env "${env[@]}" "$C" --bind 127.0.0.1 -p "$(http $i)" --cluster-port "$(clus $i)" \
    --replication 2 -m 256 -u $D/node$i.sock "$@" >$D/node$i.log 2>&1 &
  PIDS[$i]=$!
}
start_node 1 --cluster
start_node 2 -s 127.0.0.1:$(clus 1)
start_node 3 -s 127.0.0.1:$(clus 1)
# 1 if node $1's /cluster reports $2 live nodes, else 0.
active() { curl -s -m 2 "http://127.0.0.1:$(http $1)/cluster" | grep -cE "\"active_nodes\": $2,?\$"; }
t=$(now_ms)
until [ "$(active 1 3)$(active 2 3)$(active 3 3)" = 111 ]; do
  (( $(now_ms) - t > DEADLINE * 1000 )) && die "the cluster did not form in ${DEADLINE}s"
  sleep 0.05
done
echo "three nodes live after $(( $(now_ms) - t )) ms (HTTP ports $(http 1)-$(http 3), cluster $(clus 1)-$(clus 3), replication 2)"

# --- N values: k00000..., the bytes of key i at i*SIZE of one random file
mkdir $D/v
head -c $((N * SIZE)) /dev/urandom >$D/pool
split -b "$SIZE" -d -a 5 $D/pool $D/v/k
KEYS=$(cd $D/v && ls | sort)
[ "$(echo "$KEYS" | wc -l)" = "$N" ] || die "split made the wrong number of values"
i=0
for k in $KEYS; do
  node=$((i % 3 + 1)); i=$((i + 1))
  printf 'upload-file = "%s"\nurl = "http://127.0.0.1:%s/cache/%s"\noutput = "/dev/null"\n' \
    "$D/v/$k" "$(http $node)" "$k"
done >$D/put.cfg
ok=$(curl -s -m 300 -K $D/put.cfg -w '%{http_code}\n' | grep -c '^201$')
[ "$ok" = "$N" ] || die "PUT: $ok of $N stored"
# One pass: every key through node $1, in order; its bodies must be the
# pool byte for byte. Prints how many answered 200.
for n in 1 2 3; do
  for k in $KEYS; do echo "url = \"http://127.0.0.1:$(http $n)/cache/$k\""; done >$D/pass$n.cfg
done
pass() {
  local got
  got=$(curl -s -m 60 -K $D/pass$1.cfg -w '%{stderr}%{http_code}\n' 2>$D/codes$1 | cmp -s - $D/pool && echo same || echo differ)
  echo "$(grep -c '^200$' $D/codes$1) $got"
}
for n in 1 2 3; do
  r=$(pass $n)
  [ "$r" = "$N same" ] || die "before the kill, through node $n: $r"
done
echo "$N values of $SIZE bytes stored and read back through each node"

# --- 1. forwarding overhead
KEY=k00000
OWNER= OTHER=
for n in 1 2 3; do
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'X-ElCache-No-Cluster: true' "http://127.0.0.1:$(http $n)/cache/$KEY")
  case $code in
    200) [ -z "$OWNER" ] && OWNER=$n ;;
    404) OTHER=$n ;;
    *) die "GET $KEY on node $n alone answered $code" ;;
  esac
done
[ -n "$OWNER" ] && [ -n "$OTHER" ] || die "no owner/non-owner pair for $KEY"
echo
echo "GET $KEY ($SIZE bytes): node $OWNER owns it, node $OTHER does not (wrk -t1 -c16 -d${SECS}s, keep-alive)"
# "req/s p50_ms p99_ms requests" from one wrk run; any non-2xx fails it.
run() {
  local out
  out=$(wrk -t1 -c16 -d"${SECS}"s --latency "$1" 2>&1)
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx"; return; fi
  echo "$out" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { r = $2 } /^ *50%/ { p50 = ms($2) } /^ *99%/ { p99 = ms($2) } / requests in / { n = $1 }
    END { if (r == "") print "failed"; else printf "%s %.3f %.3f %s\n", r, p50, p99, n }'
}
echo "| round | through | req/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
fwd0=$(mfield $OTHER forwarded_requests); own0=$(mfield $OWNER forwarded_requests)
: >$D/owner.txt; : >$D/other.txt
total_other=0
for round in $(seq "$ROUNDS"); do
  order="owner other"; [ $((round % 2)) = 0 ] && order="other owner"
  for via in $order; do
    n=$OWNER; [ $via = other ] && n=$OTHER
    r=$(run "http://127.0.0.1:$(http $n)/cache/$KEY")
    case $r in non-2xx|failed) die "wrk through node $n: $r" ;; esac
    echo "$r" >>$D/$via.txt
    [ $via = other ] && total_other=$((total_other + $(echo "$r" | cut -d' ' -f4)))
    label="owner (node $n)"; [ $via = other ] && label="non-owner (node $n)"
    echo "| $round | $label | $(echo "$r" | awk '{print $1 " | " $2 " | " $3}') |"
  done
done
fwd1=$(mfield $OTHER forwarded_requests); own1=$(mfield $OWNER forwarded_requests)
numbers "$fwd0" "$own0" "$fwd1" "$own1"
# Medians of each column, and their ratios.
med() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { cut -d' ' -f"$2" $D/$1.txt | med; }
python3 - "$(col owner 1)" "$(col other 1)" "$(col owner 2)" "$(col other 2)" "$(col owner 3)" "$(col other 3)" <<'EOF'
import sys
o_r, f_r, o50, f50, o99, f99 = map(float, sys.argv[1:])
print(f"medians: owner {o_r:,.0f} req/s p50 {o50:.3f} ms p99 {o99:.3f} ms; "
      f"non-owner {f_r:,.0f} req/s p50 {f50:.3f} ms p99 {f99:.3f} ms")
print(f"forwarding: non-owner / owner req/s {f_r / o_r:.2f}x, p50 {f50 / o50:.2f}x, p99 {f99 / o99:.2f}x")
EOF
echo "forwarded requests counted during the runs: non-owner $(( fwd1 - fwd0 )) (wrk completed $total_other; those in flight at its end are not in its count), owner $(( own1 - own0 ))"

# --- 2. kill -9 one node: time until every key is served again
DEAD=3
SURV="1 2"
fo0=$(for n in $SURV; do mfield $n fallover_reads; done)
numbers $fo0
echo
echo "kill -9 node $DEAD; every pass reads all $N keys through node 1, then node 2"
t0=$(now_ms)
kill -9 "${PIDS[$DEAD]}"
# Detection, as the survivors report it: both at two live nodes.
(
  while (( $(now_ms) - t0 < DEADLINE * 1000 )); do
    if [ "$(active 1 2)$(active 2 2)" = 11 ]; then echo $(( $(now_ms) - t0 )) >$D/detected; exit 0; fi
    sleep 0.02
  done
) &
POLLER=$!
wait "${PIDS[$DEAD]}" 2>/dev/null
served=
for p in $(seq 10000); do
  a=$(( $(now_ms) - t0 ))
  ok=1; line=""
  for n in $SURV; do
    r=$(pass $n)
    line="$line node $n: ${r% *}/$N ${r#* };"
    [ "$r" = "$N same" ] || ok=0
  done
  b=$(( $(now_ms) - t0 ))
  echo "pass $p, $a-$b ms after the kill:$line"
  if [ $ok = 1 ]; then served=$b; break; fi
  (( b > DEADLINE * 1000 )) && break
done
[ -n "$served" ] || die "the keys were not all served again within ${DEADLINE}s"
wait $POLLER 2>/dev/null; POLLER=
det=$(cat $D/detected 2>/dev/null || echo "not within ${DEADLINE}s")
own=$(for n in $SURV; do
  curl -s -m 5 "http://127.0.0.1:$(http $n)/cluster" |
    python3 -c "import json,sys; print('node $n', json.load(sys.stdin)['failure_detection_ms'])" 2>/dev/null
done | paste -sd';' -)
fo1=$(for n in $SURV; do mfield $n fallover_reads; done)
numbers $fo1
fo=$(paste -d' ' <(echo "$fo0") <(echo "$fo1") | awk '{printf "%snode %d %d", (NR > 1 ? "; " : ""), NR, $2 - $1}')
echo "kill -9 to every key served again (end of the first full pass): $served ms"
echo "kill -9 to both survivors reporting 2 live nodes (polled every 20 ms): $det ms"
echo "failure detection as the nodes measure it (last packet to declared down, ms): $own"
echo "fall-over reads counted by the survivors since the kill: $fo"
case $det in ''|*[!0-9]*) exit 1 ;; esac
