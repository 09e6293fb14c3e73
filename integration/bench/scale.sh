#!/usr/bin/env bash
# Scale: MACHINES registered machines, each with a desired state, a confirmed generation, a health
# report and tags (one machine is made through the API; the store is then filled with copies of
# it). The coordinator's memory at rest, and its CPU and memory while serving every machine's poll
# once per INTERVAL seconds (open loop at MACHINES/INTERVAL polls/s, a new connection per poll
# as agents make them, each sending its ETag back), measured by bench_load over MEASURE seconds
# after a warm-up pass over every machine (ETags; TLS sessions):
#   http   plain HTTP;
#   https  client certificate per machine (CN = machine id), sessions resumed as the agent does.
# Reference in the same run: nginx (one worker) answering the same polls (every machine's path
# mapped to one static file with an ETag) at the same rate, plain (nginx) and with client
# certificates and resumed sessions (nginx-tls).
# Usage: scale.sh [machines] [interval_s] [measure_s] [modes]
#        (100000 60 60 "http nginx https nginx-tls"); binaries from $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
machines=${1:-100000}; interval=${2:-60}; measure=${3:-60}; modes=${4:-"http nginx https nginx-tls"}
. integration/bench/lib.sh
bench_init
make_pki m000000
pki=$work/pki
rate=$(python3 -c "print($machines / $interval)")
path=/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-scale

# One machine made through the API.
start_operator_coordinator
"$bin/nixfleet" release create --id r1 --sign-key "$work/op.sec" --entry "m000000=$path" --cache-url https://cache.example.org >/dev/null
"$bin/nixfleet" deploy --release r1 --hosts m000000 --waves 100% --soak 0 >/dev/null
now=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
curl -sf -X POST -H 'Content-Type: application/json' -H 'X-Nixfleet-Protocol: 1' \
  "http://127.0.0.1:$cport/api/v1/machines/m000000/reports" -d @- >/dev/null <<JSON
{"reports":[
 {"seq":1,"at":"$now","kind":"confirmed","store_path":"$path","release_id":"r1","current_path":"$path","booted_path":"$path","agent_version":"0.1.0","uptime_s":60},
 {"seq":2,"at":"$now","kind":"health","health":{"passed":true,"results":[
   {"probe":"nginx","type":"systemd_unit","status":"pass","duration_ms":3},
   {"probe":"api","type":"http","status":"pass","duration_ms":12},
   {"probe":"disk","type":"plugin","status":"pass","duration_ms":1}]},
  "current_path":"$path","booted_path":"$path","agent_version":"0.1.0","uptime_s":120}]}
JSON
"$bin/nixfleet" machines tag m000000 web eu-west >/dev/null
kill -TERM $coord; wait $coord || true; coord=
clone_machines "$work/db" "$machines"

rss() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
start_coordinator() {  # extra serve flags...
  cport=$(free_port)
  "$bin/nixfleet-coordinator" serve --db "$work/db" --listen "127.0.0.1:$cport" --log-level error "$@" 2>"$work/coordinator.log" &
  coord=$!
  wait_http "http${tls:+s}://127.0.0.1:$cport/healthz" -k
}
echo "machines $machines, one poll each per ${interval} s = $rate polls/s, measured over ${measure} s after a warm-up pass"
for mode in $modes; do
  case $mode in
    http)
      tls=; start_coordinator --insecure-http
      echo "http: coordinator RSS at rest with $machines machines: $(rss $coord) MiB"
      "$build/bench/bench_load" "http://127.0.0.1:$cport" '/api/v1/machines/{id}/desired' --ids m:"$machines" \
        --reconnect --etag --conns 64 --threads 1 --warmup "$machines" --rate "$rate" --seconds "$measure" --server-pid $coord
      ;;
    https)
      tls=1; start_coordinator --tls-cert "$pki/server.crt" --tls-key "$pki/server.key" --client-ca "$pki/ca.crt"
      echo "https: coordinator RSS at rest with $machines machines: $(rss $coord) MiB"
      "$build/bench/bench_load" "https://127.0.0.1:$cport" '/api/v1/machines/{id}/desired' --ids m:"$machines" \
        --reconnect --resume --etag --conns 64 --threads 1 --warmup "$machines" --rate "$rate" --seconds "$measure" \
        --ca "$pki/ca.crt" --client-ca-cert "$pki/ca.crt" --client-ca-key "$pki/ca.key" --server-pid $coord
      ;;
    nginx|nginx-tls)
      nport=$(free_port); mkdir -p "$work/www"; echo '{"store_path":"'$path'"}' > "$work/www/desired"
      ssl=; scheme=http; extra=()
      if [ $mode = nginx-tls ]; then
        ssl="ssl; ssl_certificate $pki/server.crt; ssl_certificate_key $pki/server.key;
          ssl_client_certificate $pki/ca.crt; ssl_verify_client on; ssl_protocols TLSv1.3"; scheme=https
        extra=(--resume --ca "$pki/ca.crt" --client-ca-cert "$pki/ca.crt" --client-ca-key "$pki/ca.key")
      fi
      cat > "$work/nginx.conf" <<NGINX
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log; user root;
events { worker_connections 4096; }
http { access_log off; etag on;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$nport $ssl; root $work/www; default_type application/json;
    location /api/v1/machines/ { try_files /desired =404; } } }
NGINX
      nginx -c "$work/nginx.conf" & nginx=$!
      wait_http "$scheme://127.0.0.1:$nport/api/v1/machines/m000000/desired" \
        --cacert "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key"
      npid=$(pgrep -P $nginx | head -1)
      "$build/bench/bench_load" "$scheme://127.0.0.1:$nport" '/api/v1/machines/{id}/desired' --ids m:"$machines" \
        --reconnect --etag --conns 64 --threads 1 --warmup "$machines" --rate "$rate" --seconds "$measure" \
        --server-pid "$npid" "${extra[@]}"
      kill $nginx; wait $nginx 2>/dev/null || true; nginx=
      continue
      ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  echo "$mode: coordinator RSS after serving: $(rss $coord) MiB"
  kill -TERM $coord; wait $coord || true; coord=
done
