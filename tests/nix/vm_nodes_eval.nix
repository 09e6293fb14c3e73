# Evaluates a VM test node (integration/nixos-tests/nodes.nix) with nixpkgs' real `lib` on the
# NixOS stand-in, read-only pkgs and a stand-in test PKI: what `nix flake check` would give the
# node, as far as our modules go. Used by nix_modules_test.sh.
{ lib, src, node }:
let
  stub = import ./nixos-stub.nix { inherit lib; };
  pkgs = stub.pkgs // builtins.listToAttrs (map (n: { name = n; value = stub.fakePackage n; }) [ "nixfleet" "python3" "coreutils" ]);
  self.nixosModules = { agent = src + "/agent/module.nix"; coordinator = src + "/coordinator/module.nix"; };
  nodes = import (src + "/integration/nixos-tests/nodes.nix") {
    inherit pkgs self;
    pki = "/nix/store/00000000000000000000000000000000-nixfleet-test-pki";
    opPublic = "test-op-1:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM=";
  };
  eval = lib.evalModules {
    modules = [ stub.nixos { _module.check = false; } (if node == "coordinator" then nodes.coordinatorNode else nodes.hostNode node) ];
    specialArgs = { inherit pkgs; inherit (stub) utils; };
  };
  c = eval.config;
in
{
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  agentJson = c.environment.etc."nixfleet/agent.json".text or null;
  execStart = c.systemd.services.nixfleet-coordinator.serviceConfig.ExecStart or null;
  pkgsUntouched = builtins.deepSeq c.nixpkgs true;
}
