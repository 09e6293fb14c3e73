{
  description = "nixfleet: deploys NixOS fleets — signed releases, waved rollouts, health-gated activation, automatic rollback";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
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

      # A host definition in a few lines: a nixosSystem with the agent wired to a coordinator.
      #   nixosConfigurations.web-01 = nixfleet.lib.mkHost {
      #     hostName = "web-01"; coordinator = "https://fleet.example.org:8443";
      #     trustedKeys = [ "ops-1:…" ]; modules = [ ./hosts/web-01.nix ];
      #   };
      lib.mkHost =
        { hostName
        , coordinator
        , system ? "x86_64-linux"
        # Required: the module refuses a host without operator keys (unless allowUnsigned).
        , trustedKeys ? [ ]
        , allowUnsigned ? false
        , cacheKeys ? trustedKeys
        , tls ? null
        , probes ? [ ]
        , modules ? [ ]
        }:
        nixpkgs.lib.nixosSystem {
          inherit system;
          modules = [
            self.nixosModules.agent
            {
              networking.hostName = hostName;
              services.nixfleet-agent = {
                enable = true;
                settings = {
                  coordinator_url = coordinator;
                  trusted_keys = trustedKeys;
                  allow_unsigned = if allowUnsigned then true else null;
                  cache_public_keys = cacheKeys;
                  inherit tls;
                };
                health.probes = probes;
              };
            }
          ] ++ modules;
        };

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
