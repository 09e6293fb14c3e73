# What `lib.mkHost` hands to `nixosSystem`: the host's modules, with the agent wired to its
# coordinator and, when asked for, home-manager, disko and impermanence — the inputs of this
# flake, each following its nixpkgs, so one version of everything. Pure: tests evaluate it
# without fetching anything.
# `inputs`: { home-manager, disko, impermanence } (flake inputs; any may be missing).
{ agentModule, inputs ? { } }:
{ hostName
, coordinator
, system ? "x86_64-linux"
  # Required: the agent module refuses a host without operator keys (unless allowUnsigned).
, trustedKeys ? [ ]
, allowUnsigned ? false
, cacheKeys ? trustedKeys
, tls ? null
, probes ? [ ]
  # { users.<name> = a home-manager module; }: home-manager's NixOS module with the system's pkgs.
, homeManager ? null
  # disko.devices of this host: its disk layout, for disko's NixOS module (and disko-install).
, disko ? null
  # { persistPath ? "/persist"; directories ? [ ]; files ? [ ]; users ? { }; }: an ephemeral root
  # with impermanence; the agent's state is persisted there with the rest.
, impermanence ? null
, specialArgs ? { }
, modules ? [ ]
}:
let
  need = name: inputs.${name} or (throw "mkHost: the ${name} input is not available");
  persistPath = impermanence.persistPath or "/persist";
in
{
  inherit system;
  specialArgs = { inherit inputs; } // specialArgs;
  modules = [
    agentModule
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
  ]
  ++ (if homeManager == null then [ ] else [
    (need "home-manager").nixosModules.home-manager
    {
      home-manager.useGlobalPkgs = true;
      home-manager.useUserPackages = true;
      home-manager.users = homeManager.users or { };
    }
  ])
  ++ (if disko == null then [ ] else [
    (need "disko").nixosModules.disko
    { disko.devices = disko; }
  ])
  ++ (if impermanence == null then [ ] else [
    (need "impermanence").nixosModules.impermanence
    {
      environment.persistence.${persistPath} = {
        hideMounts = true;
        directories = impermanence.directories or [ ];
        files = impermanence.files or [ ];
        users = impermanence.users or { };
      };
      services.nixfleet-agent.persistence = persistPath;
    }
  ])
  ++ modules;
}
