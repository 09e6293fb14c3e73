# The VM test nodes: a coordinator (mTLS with its fleet CA, nix-serve as the signed binary cache) and hosts whose
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
        # The fleet CA: hosts enroll with one-time tokens (made in the test script).
        ca_cert = "/etc/nixfleet/ca.crt";
        ca_key = "/etc/nixfleet/ca.key";
        poll_hint = 1;
      };
    };
    environment.etc."nixfleet/coordinator.crt".source = "${pki}/coordinator.crt";
    environment.etc."nixfleet/coordinator.key" = { source = "${pki}/coordinator.key"; mode = "0400"; };
    environment.etc."nixfleet/ca.crt".source = "${pki}/ca.crt";
    environment.etc."nixfleet/ca.key" = { source = "${pki}/ca.key"; mode = "0400"; };
    services.nix-serve = { enable = true; secretKeyFile = "${pki}/op.sec"; };
    environment.systemPackages = [ pkgs.nixfleet ];
  };

  # A host whose specialisations are the releases: `good` answers on :8080, `broken` does not.
  hostNode = name: { config, ... }: {
    imports = [ self.nixosModules.agent ];
    networking.hostName = name;
    services.nixfleet-agent = {
      enable = true;
      settings = {
        coordinator_url = "https://coordinator:8443";
        # Only the CA and a token the test script puts there: the host makes its own key and enrolls.
        tls = { ca_file = "${pki}/ca.crt"; };
        enroll_token_file = "/root/enroll-token";
        retry_interval_s = 2;
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
