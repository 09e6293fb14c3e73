#!/usr/bin/env bash
# Poll path: GET /api/v1/machines/{id}/desired on the coordinator (200 with the body, and 304 with
# If-None-Match) against nginx serving the same body as a static file with an ETag, side by side,
# with wrk at the same connection counts. Plain HTTP. Usage: poll_path.sh [seconds] (default 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
bin=build/release/bin
work=$(mktemp -d)
cleanup() { kill $coord $nginx 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cport=$(port); nport=$(port)

key=$("$bin/nixfleet-coordinator" keys create --db "$work/db" --name bench --role admin)
"$bin/nixfleet-coordinator" serve --db "$work/db" --listen "127.0.0.1:$cport" --insecure-http --log-level error 2>/dev/null &
coord=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$cport/healthz" >/dev/null && break; sleep 0.05; done
export NIXFLEET_COORDINATOR="http://127.0.0.1:$cport" NIXFLEET_API_KEY="$key" NIXFLEET_CONFIG="$work/none.json"
echo '{}' > "$work/none.json"
nix-store --generate-binary-cache-key bench-1 "$work/op.sec" "$work/op.pub" 2>/dev/null
chmod 600 "$work/op.sec"
path=/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-bench-01
"$bin/nixfleet" release create --id r1 --sign-key "$work/op.sec" --entry "bench-01=$path" --cache-url https://cache.example.org >/dev/null
"$bin/nixfleet" deploy --release r1 --hosts bench-01 --waves 100% >/dev/null

url="http://127.0.0.1:$cport/api/v1/machines/bench-01/desired"
curl -sf -D "$work/headers" -o "$work/desired.json" "$url"
etag=$(awk -F': ' 'tolower($1)=="etag" {gsub("\r",""); print $2}' "$work/headers")
mkdir -p "$work/www"
cp "$work/desired.json" "$work/www/desired"
cat > "$work/nginx.conf" <<NGINX
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log; user root;
events { worker_connections 4096; }
http { access_log off; etag on; keepalive_requests 1000000;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$nport; root $work/www; default_type application/json; } }
NGINX
nginx -c "$work/nginx.conf" & nginx=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$nport/desired" >/dev/null && break; sleep 0.05; done
netag=$(curl -sfI "http://127.0.0.1:$nport/desired" | awk -F': ' 'tolower($1)=="etag" {gsub("\r",""); print $2}')

rps() { awk '/Requests\/sec/ {print $2}'; }
p99() { awk '/ 99%/ {print $2}'; }
echo "one worker thread each (the coordinator serves on one io thread; nginx with worker_processes 1); wrk -t2, ${seconds}s"
printf "%-6s %-11s %14s %14s %8s %12s %12s\n" conns request nixfleet_rps nginx_rps ratio nixfleet_p99 nginx_p99
for c in 16 256; do
  for kind in 200 304; do
    h=(); nh=()
    if [ $kind = 304 ]; then h=(-H "If-None-Match: $etag"); nh=(-H "If-None-Match: $netag"); fi
    a=$(wrk -t2 -c$c -d${seconds}s --latency "${h[@]}" "$url")
    b=$(wrk -t2 -c$c -d${seconds}s --latency "${nh[@]}" "http://127.0.0.1:$nport/desired")
    ra=$(echo "$a" | rps); rb=$(echo "$b" | rps)
    printf "%-6s %-11s %14s %14s %8.2f %12s %12s\n" $c $kind "$ra" "$rb" "$(echo "$ra $rb" | awk '{print $1/$2}')" \
      "$(echo "$a" | p99)" "$(echo "$b" | p99)"
  done
done
