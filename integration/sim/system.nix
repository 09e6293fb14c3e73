# A tiny stand-in for a NixOS system, without nixpkgs: `bin/switch-to-configuration` records the
# switch, points /run/current-system at this path and (re)starts a small HTTP service that the
# health probes check. It says what it stops and starts as NixOS's does, and keeps the state the
# sim's stand-in systemctl and journalctl read: /run/sim-units/UNIT.failed marks a failed unit (a
# switch restarts them all, clearing the marks), $SIM_HOST_DIR/journal/UNIT.log is its journal. `mode` breaks it on purpose:
#   good            the service answers /health with 200
#   probe_fails     the service answers /health with 500, and its worker unit fails
#   service_fails   the service exits at once
#   switch_fails    switch-to-configuration exits 1
#   switch_hangs    switch-to-configuration never returns (slow switch)
#   switch_slow     switch-to-configuration takes 4 s, then behaves as good
{ host, version, mode ? "good", nonce ? "" }:
let
  switchScript = ''
    #!/bin/sh
    echo "$(/bin/date +%s.%N) $1 @out@" >> "''${SIM_HOST_DIR:-/tmp}/switches.log"
    echo "stopping the following units: sim-service.service, sim-worker.service" >&2
    case "@mode@" in
      switch_fails) echo "switch failed on purpose" >&2; exit 1 ;;
      switch_hangs) exec /bin/sleep 3600 ;;
      switch_slow) /bin/sleep 4 ;;
    esac
    if [ "$1" != boot ]; then
      echo "starting the following units: sim-service.service, sim-worker.service" >&2
      journal="''${SIM_HOST_DIR:-/tmp}/journal"
      /bin/mkdir -p /run/sim-units "$journal"
      /bin/rm -f /run/sim-units/*.failed
      if [ "@mode@" = probe_fails ]; then
        echo "$(/bin/date -u +%Y-%m-%dT%H:%M:%S+0000) sim-worker[$$]: cannot open /var/lib/sim-worker/queue: permission denied" >> "$journal/sim-worker.service.log"
        /bin/touch /run/sim-units/sim-worker.service.failed
      else
        echo "$(/bin/date -u +%Y-%m-%dT%H:%M:%S+0000) sim-worker[$$]: started, version @version@" >> "$journal/sim-worker.service.log"
      fi
      /bin/ln -sfn @out@ /run/current-system
      if [ -f /run/sim-service.pid ]; then /bin/kill "$(/bin/cat /run/sim-service.pid)" 2>/dev/null || true; fi
      /usr/bin/setsid /usr/bin/python3 @out@/share/service.py @version@ @mode@ \
        >> "''${SIM_HOST_DIR:-/tmp}/service.log" 2>&1 < /dev/null &
      echo $! > /run/sim-service.pid
    fi
    exit 0
  '';
  serviceScript = ''
    import http.server, socketserver, sys, time
    version, mode = sys.argv[1], sys.argv[2]
    if mode == "service_fails":
        sys.exit("service failed on purpose")
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status = 500 if (mode == "probe_fails" and self.path == "/health") else 200
            body = ("ok " if status == 200 else "failing ") + version + "\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())
        def log_message(self, *args):
            pass
    class Server(socketserver.TCPServer):
        allow_reuse_address = True
    for attempt in range(100):
        try:
            server = Server(("127.0.0.1", 8080), Handler)
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit("port 8080 stayed busy")
    server.serve_forever()
  '';
in
builtins.derivation {
  name = "nixos-system-${host}-${version}";
  system = "x86_64-linux";
  builder = "/bin/sh";
  inherit switchScript serviceScript mode version nonce;
  args = [ "-c" ''
    /bin/mkdir -p $out/bin $out/share
    printf '%s' "$switchScript" | /bin/sed -e "s|@out@|$out|g" -e "s|@mode@|$mode|g" -e "s|@version@|$version|g" \
      > $out/bin/switch-to-configuration
    /bin/chmod +x $out/bin/switch-to-configuration
    printf '%s' "$serviceScript" > $out/share/service.py
  '' ];
}
