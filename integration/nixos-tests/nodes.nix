# The VM test nodes: a coordinator (mTLS, nix-serve as the signed binary cache) and hosts whose
# specialisations are the releases. A function of the test PKI, so that CI can evaluate the node
# configurations against the modules without building anything.
{ pkgs, self, pki, opPublic }:
{
  coordinatorNode = { ... }: {
    imports = [ self.nixosModules.coordinator ];
    networking.firewall.allowedTCPPorts = [ 8443 5000 ];
    services.nixfleet-coordinator = {
      enable = true;
      settings = {
        # Test-only keys, placed outside the store as an operator would (the module refuses a
        # key under /nix/store).
        tls_cert = "/etc/nixfleet/coordinator.crt";
        tls_key = "/etc/nixfleet/coordinator.key";
        client_ca = "/etc/nixfleet/ca.crt";
        poll_hint = 1;
      };
    };
    environment.etc."nixfleet/coordinator.crt".source = "${pki}/coordinator.crt";
    environment.etc."nixfleet/coordinator.key" = { source = "${pki}/coordinator.key"; mode = "0400"; };
    environment.etc."nixfleet/ca.crt".source = "${pki}/ca.crt";
    services.nix-serve = { enable = true; secretKeyFile = "${pki}/op.sec"; };
    environment.systemPackages = [ pkgs.nixfleet ];
  };

  # A host whose specialisations are the releases: `good` answers on :8080, `broken` does not.
  hostNode = name: { config, ... }: {
    imports = [ self.nixosModules.agent ];
    networking.hostName = name;
    environment.etc."nixfleet/${name}.key" = { source = "${pki}/${name}.key"; mode = "0400"; };
    services.nixfleet-agent = {
      enable = true;
      settings = {
        coordinator_url = "https://coordinator:8443";
        tls = { ca_file = "${pki}/ca.crt"; cert_file = "${pki}/${name}.crt"; key_file = "/etc/nixfleet/${name}.key"; };
        trusted_keys = [ opPublic ];
        cache_public_keys = [ opPublic ];
        poll_interval_s = 2;
        startup_jitter_s = 0;
      };
      health = {
        gate = { grace_s = 2; interval_s = 1; soak_s = 5; failure_threshold = 3; timeout_s = 60; };
        probes = [{ name = "web"; type = "http"; url = "http://127.0.0.1:8080/"; expect_status = [ 200 ]; }];
      };
    };
    services.openssh = { enable = true; settings.PermitRootLogin = "prohibit-password"; };
    specialisation.good.configuration = {
      systemd.services.web = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = "${pkgs.python3}/bin/python3 -m http.server 8080 --bind 127.0.0.1";
      };
    };
    specialisation.broken.configuration = {
      systemd.services.web = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = "${pkgs.coreutils}/bin/false";
      };
    };
  };
}
