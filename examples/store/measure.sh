#!/usr/bin/env bash
# The store against redis-server, interleaved round by round, with the same
# client (redis-benchmark -P 16 -c 50 -d 100 -t set,get, 100k random keys)
# at the same durability: redis appendfsync always against --sync always,
# everysec against --sync never. Build first and run with nothing else:
#   cargo build --release --example store && examples/store/measure.sh
set -u
cd "$(dirname "$0")/../.."
S=target/release/examples/store
run_bench() { redis-benchmark -p $1 -P 16 -c 50 -d 100 -t set,get -n 200000 -r 100000 -q 2>/dev/null | tr '\r' '\n' | grep -E "^(SET|GET):" | sed 's/ requests per second//' | tr '\n' ' '; }
for round in 1 2 3; do
 for who in redis-always store-always redis-everysec store-never; do
  D=$(mktemp -d /var/tmp/rb.XXXX)
  case $who in
   redis-always) redis-server --port 7490 --dir $D --save "" --appendonly yes --appendfsync always --daemonize yes >/dev/null; port=7490;;
   redis-everysec) redis-server --port 7490 --dir $D --save "" --appendonly yes --appendfsync everysec --daemonize yes >/dev/null; port=7490;;
   store-always) $S serve --dir $D --addr 127.0.0.1:7491 --sync always >/dev/null 2>&1 & P=$!; port=7491;;
   store-never) $S serve --dir $D --addr 127.0.0.1:7491 --sync never >/dev/null 2>&1 & P=$!; port=7491;;
  esac
  for i in $(seq 50); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "| $round | $who | $(run_bench $port) |"
  case $who in redis-*) redis-cli -p 7490 shutdown nosave >/dev/null 2>&1;; *) kill $P; wait $P 2>/dev/null;; esac
  sleep 0.5; rm -rf $D
 done
done
