{
  description = "nixfleet: deploys NixOS fleets — signed releases, waved rollouts, health-gated activation, automatic rollback";

  # The fleet framework: home-manager, disko and impermanence each follow our nixpkgs (and
  # impermanence our home-manager), so a host built with mkHost has one version of everything.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    home-manager = {
      url = "github:nix-community/home-manager/release-25.11";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    disko = {
      url = "github:nix-community/disko/v1.13.0";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    impermanence = {
      url = "github:nix-community/impermanence";
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.home-manager.follows = "home-manager";
    };
  };

  outputs = inputs@{ self, nixpkgs, home-manager, disko, impermanence }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f (import nixpkgs {
        inherit system;
        overlays = [ self.overlays.default ];
      }));
    in
    {
      overlays.default = final: prev: {
        nixfleet = final.callPackage ./nix/package.nix { };
        # One build; these name the binary each role needs.
        nixfleet-agent = final.nixfleet;
        nixfleet-coordinator = final.nixfleet;
      };

      packages = forAll (pkgs: {
        inherit (pkgs) nixfleet nixfleet-agent nixfleet-coordinator;
        default = pkgs.nixfleet;
      });

      apps = forAll (pkgs: {
        nixfleet = { type = "app"; program = "${pkgs.nixfleet}/bin/nixfleet"; };
        nixfleet-agent = { type = "app"; program = "${pkgs.nixfleet}/bin/nixfleet-agent"; };
        nixfleet-coordinator = { type = "app"; program = "${pkgs.nixfleet}/bin/nixfleet-coordinator"; };
        default = self.apps.${pkgs.stdenv.hostPlatform.system}.nixfleet;
      });

      # The modules build the package with the host's own pkgs and never set nixpkgs.* (which
      # read-only pkgs, `nixosSystem { pkgs = …; }` and VM tests forbid); the overlay is there for
      # those who want pkgs.nixfleet.
      nixosModules = {
        agent = ./agent/module.nix;
        coordinator = ./coordinator/module.nix;
        default = { imports = [ ./agent/module.nix ./coordinator/module.nix ]; };
      };

      # A host definition in a few lines: a nixosSystem with the agent wired to a coordinator and,
      # optionally, home-manager users, a disko layout and an ephemeral root (nix/mk-host.nix):
      #   nixosConfigurations.web-01 = nixfleet.lib.mkHost {
      #     hostName = "web-01"; coordinator = "https://fleet.example.org:8443";
      #     trustedKeys = [ "ops-1:…" ]; modules = [ ./hosts/web-01.nix ];
      #   };
      # `nixpkgs` overrides the nixpkgs the system is built from (default: this flake's).
      lib.mkHost = { nixpkgs ? inputs.nixpkgs, ... }@args:
        nixpkgs.lib.nixosSystem (import ./nix/mk-host.nix {
          agentModule = self.nixosModules.agent;
          inputs = { inherit home-manager disko impermanence; };
        } (builtins.removeAttrs args [ "nixpkgs" ]));

      checks = forAll (pkgs: {
        package = pkgs.nixfleet;
      } // import ./integration/nixos-tests { inherit pkgs self; });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ pkgs.nixfleet ];
          packages = with pkgs; [ ccache clang-tools gdb python3Packages.pytest nginx socat wrk openssl nix ];
        };
      });

      formatter = forAll (pkgs: pkgs.nixpkgs-fmt);
    };
}
