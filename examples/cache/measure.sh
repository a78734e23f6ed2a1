#!/usr/bin/env bash
# The cache against nginx serving the same bytes from memory (its files on
# tmpfs, open_file_cache on, one worker process), interleaved round by
# round, with the same client (wrk -t1 -c16, keep-alive, --latency):
# GET of a 100 B and a 4 KiB value, PUT of 4 KiB (ours only: nginx has no
# PUT), and a 1 MiB range of a 1 GiB value against a whole 1 MiB value.
# GETs are measured twice for ours: with the default plan (as many
# application workers as the plan gives, so a request may cross to its
# key's owner) and with one application worker
# (SHARED_NOTHING_APP_WORKERS=1), nginx's one process's equal.
# Build first and run with nothing else on the machine:
#   cargo build --release --example cache && examples/cache/measure.sh
# Needs wrk, nginx and curl (apt-get install wrk nginx-light curl).
set -u
cd "$(dirname "$0")/../.."
C=target/release/examples/cache
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
[ -x $C ] || { echo "build first: cargo build --release --example cache"; exit 1; }
D=$(mktemp -d /dev/shm/cache-measure.XXXX)
trap 'kill $CP $CP1 2>/dev/null; nginx -c $D/nginx.conf -s stop 2>/dev/null; rm -rf $D' EXIT
head -c 100 /dev/urandom > $D/v100
head -c 4096 /dev/urandom > $D/v4k
head -c $((1 << 20)) /dev/urandom > $D/v1m
head -c $((1 << 30)) /dev/zero > $D/v1g
cat > $D/nginx.conf <<EOF
worker_processes 1;
pid $D/nginx.pid;
error_log $D/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  open_file_cache max=100 inactive=60s;
  default_type application/octet-stream;
  client_body_temp_path $D/body;
  proxy_temp_path $D/proxy;
  fastcgi_temp_path $D/fcgi;
  uwsgi_temp_path $D/uwsgi;
  scgi_temp_path $D/scgi;
  server { listen 127.0.0.1:7480; root $D; }
}
EOF
# nginx's workers run as nobody.
chmod 755 $D && chmod 644 $D/v*
nginx -c $D/nginx.conf || exit 1
$C -p 7481 -m 3072 --max-body $((2 << 30)) -u $D/cache.sock >/dev/null 2>&1 & CP=$!
SHARED_NOTHING_APP_WORKERS=1 $C -p 7482 -m 64 -u $D/cache1.sock >/dev/null 2>&1 & CP1=$!
for p in 7481 7482; do
  for i in $(seq 100); do curl -sf http://127.0.0.1:$p/health >/dev/null && break; sleep 0.1; done
done
for v in v100 v4k; do
  curl -sf -T $D/$v http://127.0.0.1:7482/cache/$v >/dev/null || { echo "PUT $v (one worker) failed"; exit 1; }
done
for v in v100 v4k v1m v1g; do
  curl -sf -T $D/$v http://127.0.0.1:7481/cache/$v >/dev/null || { echo "PUT $v failed"; exit 1; }
done
cat > $D/put.lua <<'EOF'
wrk.method = "PUT"
wrk.body = string.rep("x", 4096)
EOF
# "RPS p99" from one wrk run.
# "RPS p99" from one wrk run; a run with any non-2xx answer is refused.
run() {
  out=$(wrk -t1 -c16 -d${SECS}s --latency "$@" 2>/dev/null)
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers!"; return; fi
  echo "$out" | awk '/Requests\/sec/ {r=$2} /^ *99%/ {p=$2} END {print r, p}'
}
RANGE="Range: bytes=536870912-537919487"
# Every URL measured answers as it should, on both servers.
for u in 7480/v100 7480/v4k 7480/v1m 7481/cache/v100 7481/cache/v4k 7481/cache/v1m 7482/cache/v100 7482/cache/v4k; do
  code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$u)
  [ "$code" = 200 ] || { echo "GET $u answered $code"; exit 1; }
done
for u in 7480/v1g 7481/cache/v1g; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$RANGE" http://127.0.0.1:$u)
  [ "$code" = 206 ] || { echo "range GET $u answered $code"; exit 1; }
done
cmp <(curl -s http://127.0.0.1:7481/cache/v4k) $D/v4k || { echo "GET v4k: wrong bytes"; exit 1; }
cmp <(curl -s http://127.0.0.1:7482/cache/v4k) $D/v4k || { echo "GET v4k (one worker): wrong bytes"; exit 1; }
echo "| round | what | nginx req/s, p99 | ours req/s, p99 | ours, one worker, req/s, p99 |"
echo "|---|---|---|---|---|"
for round in $(seq $ROUNDS); do
  for v in v100 v4k; do
    n=$(run http://127.0.0.1:7480/$v)
    o=$(run http://127.0.0.1:7481/cache/$v)
    o1=$(run http://127.0.0.1:7482/cache/$v)
    echo "| $round | GET $v | $n | $o | $o1 |"
  done
  o=$(run -s $D/put.lua http://127.0.0.1:7481/cache/p4k)
  echo "| $round | PUT 4 KiB | - | $o | |"
  n=$(run -H "$RANGE" http://127.0.0.1:7480/v1g)
  o=$(run -H "$RANGE" http://127.0.0.1:7481/cache/v1g)
  echo "| $round | 1 MiB range of 1 GiB | $n | $o | |"
  n=$(run http://127.0.0.1:7480/v1m)
  o=$(run http://127.0.0.1:7481/cache/v1m)
  echo "| $round | whole 1 MiB | $n | $o | |"
done
