# What makes web-01 itself; the fleet wiring is in ../hosts.nix.
{ ... }: {
  services.nginx.enable = true;
  users.users.ops = { isNormalUser = true; extraGroups = [ "wheel" ]; };
  system.stateVersion = "25.11";
}
