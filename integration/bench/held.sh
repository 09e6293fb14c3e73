#!/usr/bin/env bash
# Held connections: CONNS agents' long polls held open by the coordinator (mTLS, a certificate per
# machine, `GET …/desired?wait=300` for machines with nothing assigned) against nginx holding the
# same number of idle TLS keep-alive connections (each answered once, ssl_verify_client on, one
# worker; TLS 1.3 on both, as agents speak it). Memory per connection = the server's RSS with them open less its RSS before, / CONNS.
# bench_load opens them from one thread, spread over loopback source addresses. Each run measures
# both servers back to back. Usage: held.sh [conns] [runs]   (10000 3)
# Binaries from $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
conns=${1:-10000}; runs=${2:-3}
. integration/bench/lib.sh
bench_init
make_pki bench-01
pki=$work/pki
# Each server and the generator need a descriptor per connection (and some): as many as the hard
# limit allows, which must be enough.
want=$((conns + 4096))
need_descriptors "$want"
sources=$(( (conns + 19999) / 20000 ))
cport=$(free_port); nport=$(free_port)
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

mkdir -p "$work/www"
echo '{}' > "$work/www/desired"
cat > "$work/nginx.conf" <<NGINX
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log; user root;
worker_rlimit_nofile $want;
events { worker_connections $((conns + 1024)); }
http { access_log off; keepalive_timeout 600s; keepalive_requests 1000000;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$nport ssl; root $work/www; default_type application/json;
    ssl_certificate $pki/server.crt; ssl_certificate_key $pki/server.key;
    ssl_client_certificate $pki/ca.crt; ssl_verify_client on; ssl_protocols TLSv1.3; } }
NGINX

hold() {  # URL PATH PID: prints how many are open and the server's RSS (KiB) then
  "$build/bench/bench_load" "$1" "$2" --hold --seconds 8 --conns "$conns" --ids "m:$conns" --sources "$sources" \
    --if-none-match '"none"' --server-pid "$3" --ca "$pki/ca.crt" --client-ca-cert "$pki/ca.crt" \
    --client-ca-key "$pki/ca.key" | awk '/^open/ {for (i=1;i<NF;i++) {if ($i=="open") o=$(i+1); if ($i=="failed") f=$(i+1);
      if ($i=="server_rss_mib") r=$(i+1)} if (f > 0) {print "failed " f > "/dev/stderr"; exit 1} print o, int(r * 1024)}'
}

rows=$work/rows
echo "$conns connections per server, $sources source address(es), $runs runs"
for run in $(seq "$runs"); do
  "$bin/nixfleet-coordinator" serve --db "$work/db-$run" --listen "127.0.0.1:$cport" --tls-cert "$pki/server.crt" \
    --tls-key "$pki/server.key" --client-ca "$pki/ca.crt" --max-connections $((conns + 1024)) \
    --max-connections-per-ip 0 --log-level error 2>>"$work/coordinator.log" &
  coord=$!
  wait_http "https://127.0.0.1:$cport/healthz" --cacert "$pki/ca.crt"
  sleep 1
  before=$(rss_kib $coord)
  read -r open after < <(hold "https://127.0.0.1:$cport" "/api/v1/machines/{id}/desired?wait=300" $coord)
  kill -TERM $coord; wait $coord || true; coord=

  nginx -c "$work/nginx.conf" & nginx=$!
  wait_http "https://127.0.0.1:$nport/desired" --cacert "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key"
  worker=$(pgrep -P $nginx | head -1)
  sleep 1
  nbefore=$(rss_kib $worker)
  read -r nopen nafter < <(hold "https://127.0.0.1:$nport" /desired $worker)
  kill -TERM $nginx; wait $nginx || true; nginx=
  echo "per_connection_kib $(( (after - before) * 1000 / open )) $(( (nafter - nbefore) * 1000 / nopen ))" |
    awk '{printf "%s %.2f %.2f %.3f\n", $1, $2 / 1000, $3 / 1000, $2 / $3}' >> "$rows"
  echo "run $run: coordinator $before -> $after KiB ($open held), nginx worker $nbefore -> $nafter KiB ($nopen idle)"
done
echo "per held connection, KiB: coordinator  nginx  ratio (median [min–max] over $runs runs)"
summarize "coordinator nginx ratio" < "$rows"
