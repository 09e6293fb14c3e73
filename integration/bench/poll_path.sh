#!/usr/bin/env bash
# Poll path: GET /api/v1/machines/{id}/desired on the coordinator (200 with the body, and 304 with
# If-None-Match) against nginx serving the same body as a static file with an ETag, side by side,
# at the same connection counts: plain HTTP with wrk; HTTPS with a client certificate (the
# coordinator's agent authentication; nginx with ssl_verify_client on) with bench_load, which can
# present one — over kept-alive connections, and with a new connection and handshake per request
# as agents poll. Both servers speak TLS 1.3, as the coordinator and its agents do (Debian's nginx
# 1.22 offers at most TLS 1.2 unless told: its resumed handshakes skipped the key exchange).
# The load generator has one thread (wrk -t1, bench_load --threads 1), so that on
# a 2-core machine the server measured has a core to itself. Each run measures both servers back
# to back; the summary gives the median and min–max over the runs. Usage: poll_path.sh [seconds] [runs]   (5 5)
# Binaries from $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-5}; runs=${2:-5}
. integration/bench/lib.sh
bench_init
nport=$(free_port); ctport=$(free_port); ntport=$(free_port)
one_assigned_machine
# A copy of the same state, served over TLS with agent authentication (one io thread each).
cp "$work/db" "$work/db-tls"
"$bin/nixfleet-coordinator" serve --db "$work/db" --listen "127.0.0.1:$cport" --insecure-http --log-level error 2>/dev/null &
coord=$!
"$bin/nixfleet-coordinator" serve --db "$work/db-tls" --listen "127.0.0.1:$ctport" --tls-cert "$pki/server.crt" \
  --tls-key "$pki/server.key" --client-ca "$pki/ca.crt" --log-level error 2>/dev/null &
coord="$coord $!"
wait_http "http://127.0.0.1:$cport/healthz"
url="http://127.0.0.1:$cport/api/v1/machines/bench-01/desired"
curl -sf -D "$work/headers" -o "$work/desired.json" "$url"
etag=$(awk -F': ' 'tolower($1)=="etag" {gsub("\r",""); print $2}' "$work/headers")
tls=(--cacert "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key")
wait_http "https://127.0.0.1:$ctport/api/v1/machines/bench-01/desired" "${tls[@]}"
mkdir -p "$work/www"
cp "$work/desired.json" "$work/www/desired"
cat > "$work/nginx.conf" <<NGINX
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log; user root;
events { worker_connections 4096; }
http { access_log off; etag on; keepalive_requests 1000000;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$nport; root $work/www; default_type application/json; }
  server { listen 127.0.0.1:$ntport ssl; root $work/www; default_type application/json;
    ssl_certificate $pki/server.crt; ssl_certificate_key $pki/server.key;
    ssl_client_certificate $pki/ca.crt; ssl_verify_client on; ssl_protocols TLSv1.3; } }
NGINX
nginx -c "$work/nginx.conf" & nginx=$!
wait_http "http://127.0.0.1:$nport/desired"
netag=$(curl -sfI "http://127.0.0.1:$nport/desired" | awk -F': ' 'tolower($1)=="etag" {gsub("\r",""); print $2}')

# wrk prints latencies with units; in ms.
wrk_row() { awk '/Requests\/sec/ {r=$2} / 99%/ {v=$2; u=v; gsub(/[0-9.]/,"",u); sub(/[a-z]+$/,"",v);
  m = (u=="us") ? v/1000 : (u=="s") ? v*1000 : v; p=m} END {print r, p}'; }
load_row() { awk '{for (i=1;i<NF;i++) {if ($i=="rps") r=$(i+1); if ($i=="p99_ms") p=$(i+1); if ($i=="errors") e=$(i+1)}}
  END {if (e > 0) print "errors", e > "/dev/stderr"; print r, p}'; }
load() { "$build/bench/bench_load" "$@" --threads 1 --seconds "$seconds" --ca "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key"; }

echo "one load-generator thread; one worker thread each (the coordinator serves on one io thread; nginx with worker_processes 1); ${seconds}s per measurement, $runs runs"
rows=$work/rows
for run in $(seq "$runs"); do
  for c in 16 256; do
    for kind in 200 304; do
      h=(); nh=(); lh=(); nlh=()
      if [ $kind = 304 ]; then h=(-H "If-None-Match: $etag"); nh=(-H "If-None-Match: $netag")
        lh=(--if-none-match "$etag"); nlh=(--if-none-match "$netag"); fi
      a=$(wrk -t1 -c$c -d${seconds}s --latency "${h[@]}" "$url" | wrk_row)
      b=$(wrk -t1 -c$c -d${seconds}s --latency "${nh[@]}" "http://127.0.0.1:$nport/desired" | wrk_row)
      echo "http_c${c}_$kind $a $b" | awk '{print $1, $2, $4, $2/$4, $3, $5}' >> "$rows"
      a=$(load "https://127.0.0.1:$ctport" /api/v1/machines/bench-01/desired --conns $c "${lh[@]}" | load_row)
      b=$(load "https://127.0.0.1:$ntport" /desired --conns $c "${nlh[@]}" | load_row)
      echo "https_c${c}_$kind $a $b" | awk '{print $1, $2, $4, $2/$4, $3, $5}' >> "$rows"
    done
  done
  # As agents poll: a new connection and a full handshake for every request.
  a=$(load "https://127.0.0.1:$ctport" /api/v1/machines/bench-01/desired --conns 16 --reconnect --if-none-match "$etag" | load_row)
  b=$(load "https://127.0.0.1:$ntport" /desired --conns 16 --reconnect --if-none-match "$netag" | load_row)
  echo "https_handshake_c16_304 $a $b" | awk '{print $1, $2, $4, $2/$4, $3, $5}' >> "$rows"
  # The same, resuming the TLS session (what the agent does from its second poll on).
  a=$(load "https://127.0.0.1:$ctport" /api/v1/machines/bench-01/desired --conns 16 --reconnect --resume --if-none-match "$etag" | load_row)
  b=$(load "https://127.0.0.1:$ntport" /desired --conns 16 --reconnect --resume --if-none-match "$netag" | load_row)
  echo "https_resumed_c16_304 $a $b" | awk '{print $1, $2, $4, $2/$4, $3, $5}' >> "$rows"
  echo "run $run done" >&2
done
summarize "nixfleet_rps nginx_rps ratio nixfleet_p99_ms nginx_p99_ms" < "$rows"
