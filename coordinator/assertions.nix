# What `nixfleet-coordinator serve` would refuse at start (exit 78), as NixOS assertions, so that a
# mistake is an evaluation error and not a restart loop. Pure (builtins only): CI evaluates it
# without nixpkgs beside the binary's own check-config (tests/nix/nix_files_test.sh).
{ settings }:
let
  s = settings;
  get = n: s.${n} or null;
  set = n: get n != null;
  # HOST:PORT (the host may be a bracketed IPv6 address; the binary checks it precisely).
  hostPort = v:
    let m = builtins.match "(.+):([0-9]+)" v;
    in m != null && builtins.stringLength (builtins.elemAt m 1) <= 5 && builtins.fromJSON (builtins.elemAt m 1) <= 65535;
  inStore = v: v != null && builtins.substring 0 11 (toString v) == "/nix/store/";
  between = n: lo: hi: !(set n) || (get n >= lo && get n <= hi);
  tls = set "tls_cert";
  opt = "services.nixfleet-coordinator.settings";
in
[
  { assertion = hostPort (s.listen or "[::]:8443"); message = "${opt}.listen: expected HOST:PORT, got ${toString (s.listen or "")}"; }
  { assertion = !(set "metrics_listen") || hostPort (get "metrics_listen"); message = "${opt}.metrics_listen: expected HOST:PORT"; }
  { assertion = set "tls_cert" == set "tls_key"; message = "${opt}.tls_cert and tls_key go together"; }
  { assertion = tls || (get "insecure_http") == true; message = "${opt}: give tls_cert and tls_key, or insecure_http = true to serve plain HTTP"; }
  { assertion = !(tls && (get "insecure_http") == true); message = "${opt}.insecure_http and tls_cert exclude each other"; }
  { assertion = tls || !(set "client_ca" || (get "require_client_cert") == true); message = "${opt}.client_ca and require_client_cert need TLS"; }
  { assertion = (get "require_client_cert") != true || set "client_ca"; message = "${opt}.require_client_cert needs client_ca"; }
  # A private key in the Nix store is readable by every user of the machine.
  { assertion = !(inStore (get "tls_key")); message = "${opt}.tls_key is a Nix store path: give a path outside the store (the key would be world-readable)"; }
  { assertion = !(inStore (get "audit_key")); message = "${opt}.audit_key is a Nix store path: give a path outside the store (the key would be world-readable)"; }
  { assertion = !(inStore (get "ca_key")); message = "${opt}.ca_key is a Nix store path: give a path outside the store (the fleet CA's key would be world-readable)"; }
  { assertion = set "ca_cert" == set "ca_key"; message = "${opt}.ca_cert and ca_key go together"; }
  { assertion = !(set "ca_cert") || tls; message = "${opt}.ca_cert (the fleet CA) needs TLS"; }
  { assertion = !(set "ca_cert") || (get "require_client_cert") != true; message = "${opt}.ca_cert and require_client_cert exclude each other: hosts enroll before they have a certificate"; }
  { assertion = !(set "ui_listen") || hostPort (get "ui_listen"); message = "${opt}.ui_listen: expected HOST:PORT"; }
  { assertion = !(set "ui_listen") || get "ui_listen" != (s.listen or "[::]:8443"); message = "${opt}.ui_listen must differ from listen: the dashboard has a listener of its own"; }
  { assertion = set "ui_tls_cert" == set "ui_tls_key"; message = "${opt}.ui_tls_cert and ui_tls_key go together"; }
  { assertion = !(set "ui_tls_cert") || set "ui_listen"; message = "${opt}.ui_tls_cert needs ui_listen"; }
  { assertion = !(inStore (get "ui_tls_key")); message = "${opt}.ui_tls_key is a Nix store path: give a path outside the store (the key would be world-readable)"; }
  { assertion = between "checkpoint_interval" 1 86400; message = "${opt}.checkpoint_interval: between 1 and 86400 seconds"; }
  { assertion = between "report_retention_days" 1 3650; message = "${opt}.report_retention_days: between 1 and 3650"; }
  { assertion = between "poll_hint" 1 3600; message = "${opt}.poll_hint: between 1 and 3600 seconds"; }
  { assertion = between "long_poll_max" 0 3600; message = "${opt}.long_poll_max: between 0 and 3600 seconds"; }
  { assertion = between "idle_timeout" 0.1 3600; message = "${opt}.idle_timeout: between 0.1 and 3600 seconds"; }
  { assertion = between "request_timeout" 0.1 600; message = "${opt}.request_timeout: between 0.1 and 600 seconds"; }
  { assertion = between "max_connections" 1 1000000; message = "${opt}.max_connections: between 1 and 1000000"; }
]
