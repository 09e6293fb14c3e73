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
in
{
  agent = clean (settings // { health_config = healthConfigPath; });
  health = clean { gate = health.gate or { }; probes = health.probes or [ ]; };
}
