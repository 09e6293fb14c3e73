# An example fleet: two hosts built with nixfleet.lib.mkHost. nixfleet's inputs (nixpkgs,
# home-manager, disko, impermanence) all follow one nixpkgs; following nixfleet's nixpkgs here
# keeps the whole fleet on that one version too.
{
  inputs = {
    nixfleet.url = "github:example/nixfleet";
    nixpkgs.follows = "nixfleet/nixpkgs";
  };

  outputs = { self, nixfleet, nixpkgs }: {
    nixosConfigurations = builtins.mapAttrs
      (name: host: nixfleet.lib.mkHost (host // {
        modules = (host.modules or [ ]) ++ [ ./hosts/${name}.nix ];
      }))
      (import ./hosts.nix { });
  };
}
