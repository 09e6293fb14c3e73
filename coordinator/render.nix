# Renders the coordinator module's options into `nixfleet-coordinator serve` arguments. Pure
# (builtins only), so CI evaluates it without nixpkgs and runs `nixfleet-coordinator check-config`
# with the result. TLS files are passed as systemd credentials: `credentialsDir` is "%d" in the unit.
{ settings, credentialsDir ? "%d" }:
let
  s = settings;
  value = flag: v: if v == null then [ ] else [ flag (toString v) ];
  switch = flag: b: if b == true then [ flag ] else [ ];
  credential = name: v: if v == null then [ ] else [ "--${name}" "${credentialsDir}/${name}" ];
in
[ "--db" s.db "--listen" s.listen ]
++ credential "tls-cert" (s.tls_cert or null)
++ credential "tls-key" (s.tls_key or null)
++ credential "client-ca" (s.client_ca or null)
++ credential "audit-key" (s.audit_key or null)
++ credential "ca-cert" (s.ca_cert or null)
++ credential "ca-key" (s.ca_key or null)
++ value "--certificate-lifetime" (s.certificate_lifetime or null)
++ switch "--require-client-cert" (s.require_client_cert or false)
++ switch "--insecure-http" (s.insecure_http or false)
++ value "--metrics-listen" (s.metrics_listen or null)
++ value "--report-retention-days" (s.report_retention_days or null)
++ value "--poll-hint" (s.poll_hint or null)
++ value "--long-poll-max" (s.long_poll_max or null)
++ value "--idle-timeout" (s.idle_timeout or null)
++ value "--request-timeout" (s.request_timeout or null)
++ value "--max-connections" (s.max_connections or null)
++ value "--max-connections-per-ip" (s.max_connections_per_ip or null)
++ value "--threads" (s.threads or null)
++ value "--checkpoint-interval" (s.checkpoint_interval or null)
++ value "--report-budget" (s.report_budget or null)
++ value "--report-budget-mb" (s.report_budget_mb or null)
++ value "--report-retention-mb" (s.report_retention_mb or null)
++ value "--ui-listen" (s.ui_listen or null)
++ credential "ui-tls-cert" (s.ui_tls_cert or null)
++ credential "ui-tls-key" (s.ui_tls_key or null)
++ value "--ui-session-ttl" (s.ui_session_ttl or null)
++ value "--ui-session-idle" (s.ui_session_idle or null)
++ value "--log-level" (s.log_level or null)
