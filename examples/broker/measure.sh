#!/usr/bin/env bash
# The broker's figures for issue 16, interleaved round by round, printed as
# markdown rows for docs/benchmarks.md. Build first, and measure with
# nothing else running:
#
#   cargo build --release --example broker
#   examples/broker/measure.sh [ROUNDS]        # default 3 rounds of 5 s runs
#
# Sections (SECTIONS="floor fio tail cold logs" by default):
#   floor  one record in flight, --fsync never: the broker against `broker
#          floor` (acks at once, stores nothing), rate and CPU per record;
#   fio    --fsync always at 1 x 1 against fio's QD1 appending write +
#          fdatasync of the same record size on the same file system;
#   tail   --fsync always: p50 / p99 / p999 at 1x1, 1x64, 4x64 (100 B) and
#          4x32 (4 KiB);
#   cold   ack latency of a 1 x 1 producer with and without a consumer
#          replaying 1 GB from offset 0 after the page cache was dropped
#          (needs root for /proc/sys/vm/drop_caches);
#   logs   4 connections x 64 in flight over the default log, then 1, 2
#          and 4 named logs (`bench --logs N`).
# OLD=path/to/another/broker adds that binary beside this one in `fio` and
# `tail` (an A/B of two builds).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-target/release/examples/broker}
ROUNDS=${1:-3}
DUR=${DUR:-5s}
FS=${FS:-/var/tmp}
PORT=${PORT:-7421}
SECTIONS=${SECTIONS:-floor fio tail cold logs}
[ -x "$B" ] || { echo "build first: cargo build --release --example broker" >&2; exit 1; }

SP=
DIR=
stop() {
    if [ -n "$SP" ]; then kill "$SP" 2>/dev/null || true; wait "$SP" 2>/dev/null || true; fi
    # A dead server's listener can linger a few ms while the kernel tears
    # its io_uring down: wait until the port is free for the next one.
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null || break
        sleep 0.05
    done
    SP=
    if [ -n "$DIR" ]; then rm -rf "$DIR"; fi
    DIR=
}
trap stop EXIT

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0
        sleep 0.05
    done
    echo "server on port $PORT did not start" >&2
    exit 1
}

# start BIN server|floor [flags...]: a fresh data directory each time.
start() {
    local bin=$1 mode=$2
    shift 2
    DIR=$(mktemp -d "$FS/broker-measure.XXXX")
    "$bin" "$mode" --addr 127.0.0.1:$PORT --dir "$DIR" --stats-interval 0 "$@" >/dev/null 2>&1 &
    SP=$!
    wait_port
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# bench FLAGS...: prints "rate p50 p99 p999".
bench() {
    "$B" bench --addr 127.0.0.1:$PORT --count 0 --duration "$DUR" "$@" 2>&1 |
        awk '/throughput/ {r=$2} /ack latency/ {print r, $5, $7, $9}'
}

section() { [[ " $SECTIONS " == *" $1 "* ]]; }

if section floor; then
    echo "| round | server | records/s | p50 us | p99 us | CPU us/record |"
    echo "|---|---|---|---|---|---|"
    for r in $(seq "$ROUNDS"); do
        for who in broker floor; do
            if [ $who = broker ]; then start "$B" server --fsync never; else start "$B" floor; fi
            t0=$(ticks "$SP")
            read -r rate p50 p99 _ < <(bench --connections 1 --depth 1 --size 100)
            t1=$(ticks "$SP")
            secs=${DUR%s}
            cpu=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v r="$rate" -v s="$secs" \
                'BEGIN {printf "%.1f", t / hz * 1e6 / (r * s)}')
            echo "| $r | $who | $rate | $p50 | $p99 | $cpu |"
            stop
        done
    done
fi

if section fio; then
    echo "| round | who | writes or records/s |"
    echo "|---|---|---|"
    for r in $(seq "$ROUNDS"); do
        for fa in none native; do
            f="$FS/broker-measure.fio"
            rm -f "$f"
            iops=$(fio --name=w --filename="$f" --rw=write --bs=108 --fdatasync=1 --ioengine=psync \
                --size=64M --runtime="${DUR%s}" --time_based --fallocate=$fa \
                --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{print $49}')
            rm -f "$f"
            echo "| $r | fio QD1 write+fdatasync 108 B, fallocate=$fa | $iops |"
        done
        for bin in "$B" ${OLD:-}; do
            start "$bin" server --fsync always
            read -r rate _ < <(bench --connections 1 --depth 1 --size 100)
            echo "| $r | broker --fsync always 1x1 ($bin) | $rate |"
            stop
        done
    done
fi

if section tail; then
    echo "| round | binary | connections x depth, size | records/s | p50 | p99 | p999 | p999/p99 |"
    echo "|---|---|---|---|---|---|---|---|"
    for r in $(seq "$ROUNDS"); do
        for c in "1 1 100" "1 64 100" "4 64 100" "4 32 4096"; do
            set -- $c
            for bin in "$B" ${OLD:-}; do
                start "$bin" server --fsync always
                read -r rate p50 p99 p999 < <(bench --connections "$1" --depth "$2" --size "$3")
                ratio=$(awk -v a="$p999" -v b="$p99" 'BEGIN {printf "%.2f", a / b}')
                echo "| $r | $(basename "$bin") | ${1}x${2}, $3 B | $rate | $p50 | $p99 | $p999 | $ratio |"
                stop
            done
        done
    done
fi

if section cold; then
    start "$B" server --fsync never
    "$B" bench --addr 127.0.0.1:$PORT --connections 4 --depth 64 --size 1000 \
        --count 1000000 --duration 0 >/dev/null 2>&1
    echo "| round | 1 x 1 producer | records/s | p50 us | p99 us | p999 us |"
    echo "|---|---|---|---|---|---|"
    for r in $(seq "$ROUNDS"); do
        read -r rate p50 p99 p999 < <(bench --connections 1 --depth 1 --size 100)
        echo "| $r | alone | $rate | $p50 | $p99 | $p999 |"
        sync
        echo 3 >/proc/sys/vm/drop_caches
        "$B" consumer 0 --addr 127.0.0.1:$PORT >/dev/null 2>&1 &
        CP=$!
        read -r rate p50 p99 p999 < <(bench --connections 1 --depth 1 --size 100)
        kill $CP 2>/dev/null || true
        wait $CP 2>/dev/null || true
        echo "| $r | with a cold replay from 0 | $rate | $p50 | $p99 | $p999 |"
    done
    stop
fi

if section logs; then
    echo "| round | 4 x 64, 100 B, --fsync never | records/s |"
    echo "|---|---|---|"
    for r in $(seq "$ROUNDS"); do
        for n in 0 1 2 4; do
            start "$B" server --fsync never
            read -r rate _ < <(bench --connections 4 --depth 64 --size 100 --logs $n)
            label=$([ $n = 0 ] && echo "default log" || echo "$n named logs")
            echo "| $r | $label | $rate |"
            stop
        done
    done
fi
