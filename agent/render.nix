# Renders the agent module's options into the agent's two JSON files. Pure (builtins only), so CI
# evaluates it without nixpkgs and feeds the result to `nixfleet-agent check-config`: the module
# and the binary cannot drift apart. Options left null are left out (the agent's defaults apply).
{ settings, health ? { }, healthConfigPath ? "/etc/nixfleet/health.json" }:
let
  clean = v:
    if builtins.isAttrs v then
      builtins.listToAttrs (builtins.concatMap
        (n: let x = v.${n}; in if x == null then [ ] else [{ name = n; value = clean x; }])
        (builtins.attrNames v))
    else if builtins.isList v then map clean v
    else v;
  keys = settings.trusted_keys or null;
  hasKeys = keys != null && keys != [ ];
  allowUnsigned = (settings.allow_unsigned or null) == true;
  caches = settings.caches or null;
  weakCaches = builtins.filter (c: builtins.match ".*[?&]trusted=.*" c != null) (if caches == null then [ ] else caches);
  get = n: settings.${n} or null;
  atLeast = n: lo: get n == null || get n >= lo;
  url = settings.coordinator_url or "";
  machineId = settings.machine_id or null;
  tls = if (settings.tls or null) == null then { } else settings.tls;
  keyFile = tls.key_file or null;
  opt = "services.nixfleet-agent.settings";
  durations = [ "poll_interval_s" "retry_interval_s" "request_timeout_s" "health_interval_s" "fetch_timeout_s" "activation_timeout_s" ];
  # Paths the agent takes must be absolute and free of `..` (as its own check).
  absolute = v: v == null || (builtins.substring 0 1 v == "/" && builtins.match ".*/\\.\\.(/.*)?" v == null);
  tokenFile = get "enroll_token_file";
  pathSettings = [ (get "state_dir") (get "profile") (get "control_socket") (tls.ca_file or null) (tls.cert_file or null) keyFile tokenFile ];
  metrics = get "metrics_listen";
  metricsPort = if metrics == null then null else builtins.match "(.+):([0-9]{1,5})" metrics;
in
{
  agent = clean (settings // { health_config = healthConfigPath; });
  health = clean { gate = health.gate or { }; probes = health.probes or [ ]; };
  # What the agent would refuse at start (exit 78), as NixOS assertions: caught at evaluation,
  # not as a restart loop on the host.
  assertions = [
    {
      assertion = hasKeys || allowUnsigned;
      message = "services.nixfleet-agent.settings.trusted_keys is empty: without operator keys any coordinator "
        + "could make this host run anything. Give trusted_keys (or allow_unsigned = true, for tests only).";
    }
    {
      assertion = !(hasKeys && allowUnsigned);
      message = "services.nixfleet-agent.settings.allow_unsigned cannot be set together with trusted_keys.";
    }
    {
      assertion = builtins.match "https?://.+" url != null
        && (builtins.substring 0 8 url == "https://" || (get "allow_insecure_http") == true);
      message = "${opt}.coordinator_url must be https://… (plain http:// only with allow_insecure_http = true), got ${url}";
    }
    {
      assertion = machineId == null || builtins.match "[A-Za-z0-9][A-Za-z0-9._-]{0,127}" machineId != null;
      message = "${opt}.machine_id (the hostname by default) must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}, got \"${toString machineId}\"";
    }
    {
      assertion = (tls.cert_file or null == null) == (keyFile == null);
      message = "${opt}.tls.cert_file and key_file go together";
    }
    {
      assertion = keyFile == null || builtins.substring 0 11 keyFile != "/nix/store/";
      message = "${opt}.tls.key_file is a Nix store path: give a path outside the store (the key would be world-readable)";
    }
    {
      assertion = tokenFile == null || builtins.substring 0 11 tokenFile != "/nix/store/";
      message = "${opt}.enroll_token_file is a Nix store path: give a path outside the store (the token would be world-readable)";
    }
    {
      assertion = tokenFile == null || (tls.cert_file or null) == null;
      message = "${opt}.enroll_token_file and tls.cert_file exclude each other: an enrolled host keeps its own key and certificate in state_dir";
    }
    {
      assertion = tokenFile == null || builtins.substring 0 8 url == "https://";
      message = "${opt}.enroll_token_file: enrollment sends a token, coordinator_url must be https://";
    }
    {
      assertion = builtins.all (n: atLeast n 1) durations;
      message = "${opt}: ${builtins.concatStringsSep ", " durations} must be at least 1 second";
    }
    { assertion = atLeast "outbox_limit" 100; message = "${opt}.outbox_limit: at least 100"; }
    {
      assertion = builtins.all absolute pathSettings;
      message = "${opt}: state_dir, profile, control_socket, enroll_token_file and the tls files must be absolute paths without `..`";
    }
    {
      assertion = metrics == null || (metricsPort != null
        && builtins.fromJSON (builtins.elemAt metricsPort 1) >= 1 && builtins.fromJSON (builtins.elemAt metricsPort 1) <= 65535);
      message = "${opt}.metrics_listen: expected IP:PORT (port 1-65535), got ${toString metrics}";
    }
    { assertion = atLeast "max_target_age_s" 60; message = "${opt}.max_target_age_s: at least 60 seconds"; }
    {
      assertion = weakCaches == [ ];
      message = "services.nixfleet-agent.settings.caches: `trusted=` would switch signature checks off: "
        + builtins.concatStringsSep ", " weakCaches;
    }
  ];
  warnings =
    if allowUnsigned then [ "services.nixfleet-agent.settings.allow_unsigned is set: this host deploys unsigned targets from its coordinator." ]
    else [ ];
}
