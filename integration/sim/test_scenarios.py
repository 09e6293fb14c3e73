"""Fleet-in-a-box scenarios: real Nix stores and profiles, a real signed cache, real TLS, real
agents in namespaces, real faults. Each test gets a fresh fleet of three hosts."""
import json
import signal
import time

from fleet import wait_for

TERMINAL = {"completed", "paused", "halted", "reverted", "cancelled"}


def events(rollout, kind=None):
    return [e for e in rollout["events"] if kind is None or e["kind"] == kind]


def audit_actions(fleet):
    return [e["action"] for e in json.loads(fleet.cli("--json", "audit", "--limit", "1000").stdout)]


def reported(fleet, host, path):
    return lambda: fleet.machine(host).get("current_path") == path


def test_01_hosts_register_and_report_their_initial_generation(fleet):
    for h in fleet.hosts.values():
        wait_for(f"{h.name} to report its initial generation", reported(fleet, h.name, h.initial), timeout=30)
    status = fleet.cli("status").stdout
    for name in fleet.hosts:
        assert name in status
    machines = json.loads(fleet.cli("--json", "status").stdout)
    assert {m["id"] for m in machines} == set(fleet.hosts)
    assert all(m["last_seen"] for m in machines)


def test_02_canary_rollout_of_a_good_release_confirms_every_host(fleet):
    systems = {n: fleet.build_system(n, "1") for n in fleet.hosts}
    fleet.release("good-1", systems)
    rid = fleet.deploy("good-1", "--hosts", "*", "--waves", "canary", "--soak", "1")
    r = fleet.wait_rollout(rid, TERMINAL, timeout=120)
    assert r["status"] == "completed", r["events"]
    for name, h in fleet.hosts.items():
        assert h.current() == systems[name]
        assert h.profile() == systems[name]
        assert len(h.generations()) == 2, "a new profile generation"
        assert h.service_ok()
        m = fleet.machine(name)
        assert m["history"][0]["store_path"] == systems[name]
    assert len(events(r, "host_confirmed")) == 3
    assert len(events(r, "wave_done")) == 2
    actions = audit_actions(fleet)
    for a in ("release.created", "rollout.created", "rollout.host_dispatched", "rollout.host_confirmed",
              "rollout.rollout_completed", "machine.confirmed"):
        assert a in actions, a
    assert fleet.cli("audit", "--verify").stdout.startswith("audit log intact")


def test_03_broken_release_canary_rolls_itself_back_and_the_rollout_pauses(fleet):
    for h in fleet.hosts.values():
        wait_for(f"{h.name} to report", reported(fleet, h.name, h.initial), timeout=30)
    bad = {n: fleet.build_system(n, "2", "probe_fails") for n in fleet.hosts}
    fleet.release("bad-2", bad)
    rid = fleet.deploy("bad-2", "--hosts", "*", "--waves", "canary", "--soak", "1")
    r = fleet.wait_rollout(rid, TERMINAL, timeout=120)
    assert r["status"] == "paused"
    canary = r["waves"][0]["hosts"][0]
    c = fleet.hosts[canary]
    wait_for("the canary to run its previous system again", lambda: c.current() == c.initial, timeout=30)
    wait_for("the canary's service to answer again", c.service_ok, timeout=20)
    assert c.profile() == c.initial
    switched = [line.split()[2] for line in c.switches()]
    assert bad[canary] in switched and switched[-1] == c.initial, switched
    m = fleet.machine(canary)
    assert m["last_report"]["kind"] in ("rolled_back", "up_to_date", "heartbeat", "health", "rejected")
    for name, h in fleet.hosts.items():
        if name != canary:
            assert len(h.switches()) == 1, f"{name} was touched"
            assert h.current() == h.initial
    # Not re-applied over the next minute.
    count = len(c.switches())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert len(c.switches()) == count, "the bad target was applied again"
        time.sleep(1)
    assert bad[canary] not in [line.split()[2] for line in c.switches()[switched.index(c.initial, 1):]]
