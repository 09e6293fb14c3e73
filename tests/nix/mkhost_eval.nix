# Evaluates `lib.mkHost` (nix/mk-host.nix) with nixpkgs' real `lib`, the real disko and
# impermanence modules (their pinned sources) and home-manager's NixOS option surface (its module
# needs all of nixpkgs), on the NixOS stand-in. Returns what the host would get. Used by
# nix_modules_test.sh.
{ lib, src, sources, hostArgs }:
let
  inherit (lib) mkOption types;
  stub = import ./nixos-stub.nix { inherit lib; };
  # home-manager's NixOS options as its nixos/default.nix declares them (users: a home-manager
  # configuration per user, not evaluated here).
  homeManagerSurface = {
    options.home-manager = {
      useGlobalPkgs = mkOption { type = types.bool; default = false; };
      useUserPackages = mkOption { type = types.bool; default = false; };
      users = mkOption { type = types.attrsOf types.deferredModule; default = { }; };
    };
  };
  inputs = {
    home-manager.nixosModules.home-manager = homeManagerSurface;
    disko.nixosModules.disko = sources + "/disko/module.nix";
    impermanence.nixosModules.impermanence = sources + "/impermanence/nixos.nix";
  };
  host = import (src + "/nix/mk-host.nix") { agentModule = src + "/agent/module.nix"; inherit inputs; } hostArgs;
  eval = lib.evalModules {
    modules = [ stub.nixos { _module.check = false; } ] ++ host.modules;
    specialArgs = { inherit (stub) pkgs utils; modulesPath = sources + "/no-nixpkgs"; } // host.specialArgs;
  };
  c = eval.config;
in
{
  inherit (host) system;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  hostName = c.networking.hostName;
  agentJson = c.environment.etc."nixfleet/agent.json".text;
  fileSystems = builtins.mapAttrs (_: f: { inherit (f) fsType neededForBoot; }) c.fileSystems;
  persistence = if c.environment ? persistence
    then builtins.mapAttrs (_: p: map (d: d.directory) p.directories) c.environment.persistence
    else null;
  homeUsers = if c ? home-manager then builtins.attrNames c.home-manager.users else null;
  specialArgs = builtins.attrNames host.specialArgs;
  pkgsUntouched = builtins.deepSeq c.nixpkgs true;
}
