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
      assertion = weakCaches == [ ];
      message = "services.nixfleet-agent.settings.caches: `trusted=` would switch signature checks off: "
        + builtins.concatStringsSep ", " weakCaches;
    }
  ];
  warnings =
    if allowUnsigned then [ "services.nixfleet-agent.settings.allow_unsigned is set: this host deploys unsigned targets from its coordinator." ]
    else [ ];
}
