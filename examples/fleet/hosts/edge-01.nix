# What makes edge-01 itself (services, users); the fleet wiring is in ../hosts.nix.
{ ... }: {
  system.stateVersion = "25.11";
}
