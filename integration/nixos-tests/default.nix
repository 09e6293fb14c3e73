# NixOS VM tests (`nix flake check` where KVM and nixpkgs are available): the fleet-in-a-box
# scenarios on real NixOS. A coordinator VM (mTLS with its fleet CA, nix-serve as the signed binary cache) and two
# host VMs running the agent module. The "releases" are NixOS specialisations of each host, built
# with it, so their closures are already valid on the host (the fetch finds them present); one is
# broken on purpose.
{ pkgs, self }:
let
  lib = pkgs.lib;

  # Test-only PKI and keys, made at build time (never used outside the VMs).
  pki = pkgs.runCommand "nixfleet-test-pki" { nativeBuildInputs = [ pkgs.nixfleet pkgs.nix ]; } ''
    mkdir -p $out
    cd $out
    nixfleet-coordinator ca init --dir fleet-ca --name nixfleet-test-ca
    cp fleet-ca/ca.crt fleet-ca/ca.key .
    nixfleet-coordinator ca server-cert --dir fleet-ca --name coordinator --cert-out coordinator.crt --key-out coordinator.key
    export NIX_STATE_DIR=$TMPDIR/nix HOME=$TMPDIR
    nix-store --generate-binary-cache-key test-op-1 op.sec op.pub
  '';
  opPublic = lib.fileContents "${pki}/op.pub";

  # The VM nodes (nodes.nix), also evaluated in CI against the modules (tests/nix/nix_modules_test.sh).
  inherit (import ./nodes.nix { inherit pkgs self pki opPublic; }) coordinatorNode hostNode;

  common = ''
    import json
    start_all()
    coordinator.wait_for_unit("nixfleet-coordinator.service")
    coordinator.wait_for_unit("nix-serve.service")
    key = coordinator.succeed(
        "nixfleet-coordinator-keys --name test --role admin").strip()
    coordinator.succeed(f"echo {key} > /root/key && chmod 600 /root/key")
    # The CLI refuses a signing key others can read (store files are world-readable).
    coordinator.succeed("install -m 600 ${pki}/op.sec /root/op.sec")
    cli = ("NIXFLEET_COORDINATOR=https://coordinator:8443 NIXFLEET_CA_FILE=${pki}/ca.crt "
           "NIXFLEET_API_KEY_FILE=/root/key nixfleet ")
    # Each host gets a one-time token and enrolls itself with the fleet CA.
    for h in (host1, host2):
        token = coordinator.succeed(cli + f"machines enroll {h.name} --ttl 10m").strip()
        h.succeed(f"install -m 600 /dev/null /root/enroll-token && echo {token} > /root/enroll-token")
    for h in (host1, host2):
        h.wait_for_unit("nixfleet-agent.service")
        h.wait_until_succeeds("test -s /var/lib/nixfleet-agent/identity.pem", timeout=60)

    def spec(host, which):
        return host.succeed(f"readlink -f /run/current-system/specialisation/{which}").strip()

    def release_current(rid):
        # What the hosts run now, as a signed release, so that going back to it is accepted.
        entries = [f"--entry {h.name}=" + h.succeed("readlink -f /run/current-system").strip()
                   for h in (host1, host2)]
        coordinator.succeed(cli + f"release create --id {rid} --sign-key /root/op.sec " + " ".join(entries))

    def release(rid, which):
        entries = []
        for h in (host1, host2):
            p = spec(h, which)
            entries.append(f"--entry {h.name}={p}")
        coordinator.succeed(cli + f"release create --id {rid} --sign-key /root/op.sec "
                            + "--cache-url http://coordinator:5000 " + " ".join(entries))

    def deploy(rid, *extra):
        out = coordinator.succeed(cli + f"--json deploy --release {rid} --hosts '*' " + " ".join(extra))
        return json.loads(out)["id"]

    def status(ro):
        return json.loads(coordinator.succeed(cli + f"--json rollout status {ro}"))["status"]
  '';

  mkTest = name: script: pkgs.testers.runNixOSTest {
    name = "nixfleet-${name}";
    nodes = { coordinator = coordinatorNode; host1 = hostNode "host1"; host2 = hostNode "host2"; };
    testScript = common + script;
  };
in
{
  vm-waved-rollout = mkTest "waved-rollout" ''
    release("good", "good")
    ro = deploy("good", "--waves canary", "--soak 2")
    coordinator.wait_until_succeeds(cli + f"rollout status {ro} | grep -q completed", timeout=300)
    for h in (host1, host2):
        h.wait_until_succeeds("curl -sf http://127.0.0.1:8080/", timeout=60)
    coordinator.succeed(cli + "audit --verify")
  '';

  vm-automatic-rollback = mkTest "automatic-rollback" ''
    before = {h.name: h.succeed("readlink -f /run/current-system").strip() for h in (host1, host2)}
    release("broken", "broken")
    ro = deploy("broken", "--waves canary")
    coordinator.wait_until_succeeds(cli + f"rollout status {ro} | grep -q paused", timeout=300)
    for h in (host1, host2):
        h.wait_until_succeeds(f"test $(readlink -f /run/current-system) = {before[h.name]}", timeout=120)
    # The canary's forensics, from real systemd and Nix: the unit that failed, its journal, the
    # closure difference between the specialisations.
    r = json.loads(coordinator.succeed(cli + f"--json rollout status {ro}"))
    canary = r["waves"][0]["hosts"][0]
    fx = json.loads(coordinator.succeed(cli + f"--json machines show {canary} --rollback"))["forensics"]
    assert "web.service" in fx["failed_units"], fx
    assert "web.service" in fx.get("journal", ""), fx
    assert fx["closure_changes"] >= 1, fx
    print(coordinator.succeed(cli + f"machines show {canary} --rollback"))
  '';

  vm-coordinator-outage = mkTest "coordinator-outage" ''
    release("good", "good")
    ro = deploy("good", "--waves canary", "--soak 20")
    coordinator.wait_until_succeeds(cli + f"rollout status {ro} | grep -q confirmed", timeout=300)
    coordinator.succeed("systemctl kill -s KILL nixfleet-coordinator.service")
    coordinator.succeed("systemctl stop nixfleet-coordinator.service")
    for h in (host1, host2):
        h.succeed("systemctl is-active nixfleet-agent.service")
    coordinator.sleep(10)
    coordinator.succeed("systemctl start nixfleet-coordinator.service")
    coordinator.wait_until_succeeds(cli + f"rollout status {ro} | grep -q completed", timeout=300)
  '';

  vm-ssh-rollback = mkTest "ssh-rollback" ''
    release_current("base")
    release("good", "good")
    ro = deploy("good", "--waves 100%", "--soak 0")
    coordinator.wait_until_succeeds(cli + f"rollout status {ro} | grep -q completed", timeout=300)
    coordinator.succeed("ssh-keygen -t ed25519 -N ''' -f /root/.ssh/id_ed25519")
    pub = coordinator.succeed("cat /root/.ssh/id_ed25519.pub").strip()
    host1.succeed(f"mkdir -p /root/.ssh && echo '{pub}' >> /root/.ssh/authorized_keys")
    good = host1.succeed("readlink -f /run/current-system").strip()
    coordinator.succeed(cli + "rollback --host host1 --ssh --target root@host1 "
                        "--ssh-option StrictHostKeyChecking=no")
    host1.succeed(f"test $(readlink -f /run/current-system) != {good}")
  '';
}
