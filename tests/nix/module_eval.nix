# Evaluates one of our NixOS modules with nixpkgs' real `lib` against the NixOS stand-in
# (nixos-stub.nix: the options it sets, typed as NixOS declares them; read-only pkgs) and returns
# what a host would get: failed assertions, warnings, the rendered units and /etc files, the
# persisted state. Used by nix_modules_test.sh:
#   nix-instantiate --eval --strict --json tests/nix/module_eval.nix --arg lib … --argstr module agent --arg config …
{ lib, src, module, config, extraModules ? [ ], check ? true }:
let
  stub = import ./nixos-stub.nix { inherit lib; };
  inherit (stub) nixos pkgs utils;
  eval = lib.evalModules {
    # `check = false` lets a real third-party module (impermanence) define options this stand-in
    # does not declare; what is read back below is still type-checked by its declarations.
    modules = [ nixos (src + "/${module}/module.nix") config { _module.check = check; } ] ++ extraModules;
    specialArgs = { inherit pkgs utils; };
  };
  c = eval.config;
in
{
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  warnings = c.warnings;
  etc = builtins.mapAttrs (_: f: f.text) (lib.filterAttrs (_: f: f.text != null) c.environment.etc);
  units = builtins.mapAttrs (_: u: {
    inherit (u) wantedBy after restartIfChanged stopIfChanged serviceConfig text;
  }) c.systemd.services;
  ports = c.networking.firewall.allowedTCPPorts;
  persistence = if c.environment ? persistence
    then builtins.mapAttrs (_: p: map (d: { inherit (d) directory mode; }) p.directories) c.environment.persistence
    else null;
  # Forces the read-only option: a module that defines nixpkgs.* fails here.
  pkgsUntouched = builtins.deepSeq c.nixpkgs true;
}
