# The fleet's hosts as `nixfleet.lib.mkHost` arguments (flake.nix turns each into a
# nixosConfiguration). Kept apart from flake.nix so that nixfleet's CI evaluates this very file.
{ operatorKey ? "ops-1:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM=" }:
let
  common = {
    coordinator = "https://fleet.example.org:8443";
    trustedKeys = [ operatorKey ];
    cacheKeys = [ "cache.example.org-1:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM=" ];
  };
in
{
  # A plain host: its root is a normal disk, its operator account managed with home-manager.
  web-01 = common // {
    hostName = "web-01";
    tls = { ca_file = "/etc/nixfleet/ca.pem"; cert_file = "/etc/nixfleet/web-01.pem"; key_file = "/etc/nixfleet/web-01.key"; };
    probes = [ { name = "nginx"; type = "systemd_unit"; unit = "nginx.service"; } ];
    homeManager.users.ops = { home.stateVersion = "25.11"; };
  };

  # An ephemeral-root host: disko lays out the disk (EFI system partition and a persistent ext4
  # partition), `/` is a tmpfs wiped on every boot, and impermanence keeps only what is declared
  # under /persist — the agent's state (in-flight record, anti-downgrade state, outbox) included,
  # so crash recovery and rollback survive a reboot.
  edge-01 = common // {
    hostName = "edge-01";
    tls = { ca_file = "/persist/etc/nixfleet/ca.pem"; cert_file = "/persist/etc/nixfleet/edge-01.pem"; key_file = "/persist/etc/nixfleet/edge-01.key"; };
    disko = {
      disk.main = {
        type = "disk";
        device = "/dev/vda";
        content = {
          type = "gpt";
          partitions = {
            ESP = { size = "512M"; type = "EF00"; content = { type = "filesystem"; format = "vfat"; mountpoint = "/boot"; }; };
            persist = { size = "100%"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/persist"; }; };
          };
        };
      };
      nodev."/" = { fsType = "tmpfs"; mountOptions = [ "size=2G" "mode=755" ]; };
    };
    impermanence = {
      persistPath = "/persist";
      directories = [ "/var/log" "/var/lib/nixos" "/etc/ssh" ];
      files = [ "/etc/machine-id" ];
    };
    modules = [ { fileSystems."/persist".neededForBoot = true; } ];
  };
}
