"""Fleet-in-a-box scenarios: real Nix stores and profiles, a real signed cache, real TLS, real
agents in namespaces, real faults. Each test gets a fresh fleet of three hosts."""
import hashlib
import hmac
import http.server
import json
import os
import signal
import threading
from datetime import datetime, timezone
import ssl
import time
import urllib.error
import urllib.request

from fleet import NIX_BUILD_CONFIG, run, wait_for

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


def all_reported(fleet):
    for h in fleet.hosts.values():
        wait_for(f"{h.name} to report", reported(fleet, h.name, h.initial), timeout=30)


def test_04_revert_in_a_later_wave_returns_every_dispatched_host(fleet):
    all_reported(fleet)
    # What runs now is a signed release too, so that agents with trusted keys accept going back to it.
    fleet.release("base-4", {n: h.initial for n, h in fleet.hosts.items()})
    systems = {n: fleet.build_system(n, "4") for n in fleet.hosts}
    fleet.release("rev-4", systems)
    rid = fleet.deploy("rev-4", "--hosts", "*", "--waves", "canary", "--soak", "15", "--on-failure", "revert")
    r = wait_for("the canary to be confirmed", lambda: (lambda r: r if events(r, "host_confirmed") else None)(fleet.rollout(rid)),
                 timeout=60)
    canary = r["waves"][0]["hosts"][0]
    # During the soak, make one host of the next wave unable to pass its gate.
    victim = next(n for n in fleet.hosts if n != canary)
    h = fleet.hosts[victim]
    h.stop_agent()
    h.write_health_config(probes=[{"name": "service", "type": "http", "url": "http://127.0.0.1:8080/health",
                                   "expect_status": [299], "timeout_s": 2}])
    h.start_agent()
    r = fleet.wait_rollout(rid, TERMINAL, timeout=120)
    assert r["status"] == "reverted", [e["kind"] for e in r["events"]]
    for name, host in fleet.hosts.items():
        wait_for(f"{name} to run its system from before the rollout again",
                 lambda host=host: host.current() == host.initial and host.service_ok(), timeout=60)
    assert systems[canary] in [line.split()[2] for line in fleet.hosts[canary].switches()], "the canary had switched"
    assert len(events(r, "host_reverted")) >= 2


def test_05_coordinator_killed_mid_rollout_hosts_carry_on_and_nothing_is_lost(fleet_factory):
    fleet = fleet_factory(agents=False)
    for h in fleet.hosts.values():
        h.write_agent_config(health_interval_s=600)  # only lifecycle reports: their numbers must be contiguous
        h.start_agent()
    all_reported(fleet)
    systems = {n: fleet.build_system(n, "5") for n in fleet.hosts}
    fleet.release("kill-5", systems)
    rid = fleet.deploy("kill-5", "--hosts", "*", "--waves", "canary", "--soak", "3")
    wait_for("the canary to be confirmed", lambda: events(fleet.rollout(rid), "host_confirmed"), timeout=60)
    fleet.kill_coordinator()
    time.sleep(4)  # an outage, not a synchronisation: hosts must simply carry on through it
    for name, h in fleet.hosts.items():
        assert h.agent.poll() is None, f"{name}'s agent died with the coordinator"
        assert h.service_ok()
    fleet.start_coordinator()
    r = fleet.wait_rollout(rid, TERMINAL, timeout=120)
    assert r["status"] == "completed", [e["kind"] for e in r["events"]]
    for name, h in fleet.hosts.items():
        assert h.current() == systems[name]
    import sqlite3
    db = sqlite3.connect(str(fleet.root / "coordinator.db"))
    for name in fleet.hosts:
        wait_for(f"{name}'s outbox to drain", lambda name=name: fleet.hosts[name].status()["outbox_depth"] == 0,
                 timeout=30)
        seqs = [row[0] for row in db.execute("SELECT seq FROM reports WHERE machine_id = ? ORDER BY seq", (name,))]
        assert seqs == list(range(1, len(seqs) + 1)), f"{name}: report sequence has gaps: {seqs}"
    db.close()


def test_06_agent_killed_during_a_slow_switch_ends_confirmed_or_rolled_back(fleet):
    all_reported(fleet)
    name = "web-1"
    h = fleet.hosts[name]
    slow = fleet.build_system(name, "6", "switch_slow")
    fleet.release("slow-6", {name: slow})
    rid = fleet.deploy("slow-6", "--hosts", name, "--waves", "100%", "--soak", "0")
    wait_for("the slow switch to start", lambda: any(slow in line for line in h.switches()), timeout=60)
    h.stop_agent(signal.SIGKILL)
    h.start_agent()
    r = fleet.wait_rollout(rid, TERMINAL, timeout=120)
    wait_for("the host to settle", lambda: (lambda st: st["in_flight"] is None and st["stage"] == "idle")(h.status()),
             timeout=60)
    cur = h.current()
    if r["status"] == "completed":
        assert cur == slow and fleet.machine(name)["history"][0]["store_path"] == slow
    else:
        assert cur == h.initial, "neither confirmed nor rolled back"
    assert h.service_ok()


def test_07_forged_or_missing_signature_is_rejected_and_nothing_is_activated(fleet):
    all_reported(fleet)
    other = fleet.make_key("sim-op-1", "other")  # the operator key's name, another key
    forged = fleet.build_system("web-1", "7")
    fleet.push([forged])
    fleet.release("forged-7", {"web-1": forged}, sign_key=other, push=False)  # same key name, wrong key
    unsigned = fleet.build_system("web-2", "7")
    fleet.push([unsigned])
    fleet.api("/api/v1/releases", "POST", {"id": "unsigned-7", "created_at": "2026-11-25T10:00:00.000Z", "sequence": 1000,
                                           "cache_urls": ["http://127.0.0.1:8081"],
                                           "entries": [{"hostname": "web-2", "store_path": unsigned}]})
    r1 = fleet.deploy("forged-7", "--hosts", "web-1", "--waves", "100%")
    r2 = fleet.deploy("unsigned-7", "--hosts", "web-2", "--waves", "100%")
    for rid, name in ((r1, "web-1"), (r2, "web-2")):
        r = fleet.wait_rollout(rid, TERMINAL, timeout=60)
        assert r["status"] == "paused"
        host = next(x for x in r["hosts"] if x["hostname"] == name)
        assert host["state"] == "failed" and host["message"].startswith("rejected"), host
        h = fleet.hosts[name]
        assert len(h.switches()) == 1 and h.current() == h.initial
        assert not h.has_path(forged if name == "web-1" else unsigned), "nothing was even fetched"


def test_08_a_closure_the_cache_did_not_sign_with_the_trusted_key_is_not_fetched(fleet):
    all_reported(fleet)
    other = fleet.make_key("rogue-cache-1", "rogue-cache")
    path = fleet.build_system("web-3", "8")
    fleet.push([path], key=other)
    fleet.release("badcache-8", {"web-3": path}, push=False)  # the entry itself is properly signed
    rid = fleet.deploy("badcache-8", "--hosts", "web-3", "--waves", "100%")
    r = fleet.wait_rollout(rid, TERMINAL, timeout=90)
    assert r["status"] == "paused"
    host = r["hosts"][0]
    assert host["state"] == "failed" and host["message"].startswith("fetch_failed"), host
    h = fleet.hosts["web-3"]
    assert not h.has_path(path)
    assert len(h.switches()) == 1 and h.current() == h.initial


def test_09_a_host_cut_off_during_its_health_gate_decides_alone_and_reports_later(fleet):
    all_reported(fleet)
    name = "web-2"
    h = fleet.hosts[name]
    h.stop_agent()
    h.write_health_config(soak_s=6)
    h.start_agent()
    target = fleet.build_system(name, "9")
    fleet.release("cut-9", {name: target})
    rid = fleet.deploy("cut-9", "--hosts", name, "--waves", "100%", "--soak", "0")
    wait_for("the switch", lambda: any(target in line for line in h.switches()), timeout=60)
    h.set_link("cut")
    wait_for("the agent to confirm on its own",
             lambda: (lambda st: st["last_good"] == target and st["stage"] == "idle")(h.status()), timeout=60)
    # The activation may have been reported before the cut; the confirmation, decided during it, not.
    history = fleet.machine(name).get("history") or []
    assert not history or history[0]["store_path"] != target, "the confirmation did not reach the coordinator while cut"
    h.set_link("up")
    r = fleet.wait_rollout(rid, TERMINAL, timeout=60)
    assert r["status"] == "completed"
    assert fleet.machine(name)["history"][0]["store_path"] == target


def test_10_rollback_through_the_coordinator(fleet):
    all_reported(fleet)
    fleet.release("base-10", {n: h.initial for n, h in fleet.hosts.items()})
    assert fleet.wait_rollout(fleet.deploy("base-10", "--hosts", "web-1", "--waves", "100%", "--soak", "0"),
                              TERMINAL)["status"] == "completed"
    v1 = fleet.build_system("web-1", "10")
    fleet.release("v1-10", {"web-1": v1})
    assert fleet.wait_rollout(fleet.deploy("v1-10", "--hosts", "web-1", "--waves", "100%", "--soak", "0"),
                              TERMINAL)["status"] == "completed"
    h = fleet.hosts["web-1"]
    assert h.current() == v1
    out = fleet.cli("rollback", "--host", "web-1").stdout
    assert h.initial in out
    wait_for("the agent to roll back", lambda: h.current() == h.initial and h.service_ok(), timeout=60)
    wait_for("the coordinator to see it", lambda: fleet.machine("web-1")["current_path"] == h.initial, timeout=30)


def test_10b_rollback_over_ssh_into_the_host(fleet):
    all_reported(fleet)
    h = fleet.hosts["web-2"]
    fleet.release("base-10b", {"web-2": h.initial})
    v1 = fleet.build_system("web-2", "10b")
    fleet.release("v1-10b", {"web-2": v1})
    assert fleet.wait_rollout(fleet.deploy("v1-10b", "--hosts", "web-2", "--waves", "100%", "--soak", "0"),
                              TERMINAL)["status"] == "completed"
    assert h.current() == v1
    port, key = h.start_sshd()
    out = fleet.cli("rollback", "--host", "web-2", "--ssh", "--target", "root@127.0.0.1",
                    "--ssh-option", f"Port={port}", "--ssh-option", f"IdentityFile={key}",
                    "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
                    "--ssh-option", "LogLevel=ERROR").stdout
    assert f"switched to {h.initial} over ssh" in out
    assert h.current() == h.initial and h.profile() == h.initial
    wait_for("the service of the old system", h.service_ok, timeout=20)
    assert fleet.machine("web-2")["desired_path"] == h.initial, "the coordinator was told"
    # The agent agrees and stays: it does not undo the rollback.
    wait_for("the coordinator to see it", lambda: fleet.machine("web-2")["current_path"] == h.initial, timeout=30)
    time.sleep(3)
    assert h.current() == h.initial


def test_11_a_rollout_gated_by_the_example_probe_plugin(fleet):
    all_reported(fleet)
    plugin = str(fleet.bin.parent / "lib" / "nixfleet-probe-disk-free.so")
    for limit, version, expected in ((1, "11a", "completed"), (10**12, "11b", "paused")):
        h = fleet.hosts["web-1"]
        h.stop_agent()
        h.write_health_config(probes=[{"name": "disk", "type": "plugin", "path": plugin,
                                       "config": {"path": "/", "min_free_mb": limit}}])
        h.start_agent()
        target = fleet.build_system("web-1", version)
        fleet.release("plugin-" + version, {"web-1": target})
        r = fleet.wait_rollout(fleet.deploy("plugin-" + version, "--hosts", "web-1", "--waves", "100%", "--soak", "0"),
                               TERMINAL, timeout=90)
        assert r["status"] == expected, [e["message"] for e in r["events"]]
        health = fleet.machine("web-1")["health"]
        assert health["results"][0]["probe"] == "disk" and health["results"][0]["type"] == "plugin"
    assert h.current() != target, "the failing plugin rolled the host back"


def test_12_hold_blocks_a_deploy_until_released(fleet):
    all_reported(fleet)
    h = fleet.hosts["web-3"]
    assert h.control("hold").returncode == 0
    target = fleet.build_system("web-3", "12")
    fleet.release("hold-12", {"web-3": target})
    rid = fleet.deploy("hold-12", "--hosts", "web-3", "--waves", "100%", "--soak", "0")
    wait_for("the held host to say so", lambda: "hold" in (fleet.machine("web-3").get("last_report") or {}).get("message", ""),
             timeout=30)
    time.sleep(3)  # held: several polls go by without a switch
    assert len(h.switches()) == 1 and h.current() == h.initial
    assert fleet.rollout(rid)["status"] == "running"
    assert h.control("release-hold").returncode == 0
    r = fleet.wait_rollout(rid, TERMINAL, timeout=60)
    assert r["status"] == "completed"
    assert h.current() == target


def desired_as_served(fleet, release_id, host, attempt=0):
    """The desired state a coordinator serves for `host` from `release_id`, genuine signature included."""
    rel = fleet.api(f"/api/v1/releases/{release_id}")
    entry = next(e for e in rel["entries"] if e["hostname"] == host)
    return {"machine_id": host, "release_id": rel["id"], "store_path": entry["store_path"],
            "cache_urls": rel["cache_urls"], "activation": rel["activation"], "rollout_id": None,
            "attempt": attempt, "entry_signature": entry["signature"], "release_created_at": rel["created_at"],
            "poll_hint": None, "release_sequence": rel["sequence"]}


def rejected_with(fleet, host, path, text):
    """The host reported refusing `path` for a reason containing `text`. Read from the audit log,
    not the last report: once the rollout sets a failed host back, its next report is up_to_date
    within a second, and a poll of last_report can miss the refusal."""
    def check():
        for e in fleet.api(f"/api/v1/audit?target={host}&action=machine.rejected&limit=1000"):
            d = e.get("detail") or {}
            if d.get("store_path") == path and text in (d.get("message") or ""):
                return True
        return False
    return check


def test_13_a_tampering_coordinator_cannot_make_a_host_run_what_the_operator_did_not_approve(fleet):
    all_reported(fleet)
    hosts = fleet.hosts
    # History: what runs (#1), an older release (#2), the current one (#3), deployed everywhere.
    fleet.release("base-13", {n: h.initial for n, h in hosts.items()})
    old = {n: fleet.build_system(n, "13-old") for n in hosts}
    fleet.release("old-13", old)
    new = {n: fleet.build_system(n, "13-new") for n in hosts}
    fleet.release("new-13", new)
    r = fleet.wait_rollout(fleet.deploy("new-13", "--hosts", "*", "--waves", "100%", "--soak", "0"), TERMINAL)
    assert r["status"] == "completed"
    fleet.compromise()
    switches = {n: len(h.switches()) for n, h in hosts.items()}

    def untouched(name):
        h = hosts[name]
        return h.current() == new[name] and len(h.switches()) == switches[name]

    # 1. Replay: web-1 is served old-13's genuinely signed entry with a raised attempt.
    fleet.set_tampering({"web-1": {"replay": desired_as_served(fleet, "old-13", "web-1"), "bump_attempt": True}})
    wait_for("web-1 to refuse the replayed older release",
             rejected_with(fleet, "web-1", old["web-1"], "older than release new-13"), timeout=30)
    assert untouched("web-1") and not hosts["web-1"].has_path(old["web-1"])

    # 2. Mode swap: web-2's honest switch target served as `boot`.
    swap = fleet.build_system("web-2", "13-swap")
    fleet.release("swap-13", {"web-2": swap})
    fleet.set_tampering({"web-2": {"set": {"activation": "boot"}}})
    rid = fleet.deploy("swap-13", "--hosts", "web-2", "--waves", "100%", "--soak", "0")
    wait_for("web-2 to refuse the swapped activation mode",
             rejected_with(fleet, "web-2", swap, "signature refused"), timeout=30)
    assert untouched("web-2") and not hosts["web-2"].has_path(swap)
    assert not any(" boot " in f" {line} " for line in hosts["web-2"].switches())
    fleet.cli("rollout", "cancel", rid)

    # 3. An unsigned closure behind `?trusted=1` (and behind a plain file URL the operator never signed).
    evil = fleet.build_system("web-3", "13-evil")
    evil_cache = fleet.root / "evil-cache"
    run(["nix", "copy", "--to", f"file://{evil_cache}", evil], env={"NIX_CONFIG": NIX_BUILD_CONFIG})  # unsigned
    fleet.release("evil-13", {"web-3": evil}, push=False)  # the entry is signed; its closure is nowhere signed
    fleet.set_tampering({"web-3": {"set": {"cache_urls": [f"file://{evil_cache}?trusted=1"]}}})
    rid = fleet.deploy("evil-13", "--hosts", "web-3", "--waves", "100%", "--soak", "0", "--health-timeout", "600")
    agent_log = hosts["web-3"].dir / "logs" / "agent.log"
    wait_for("web-3 to refuse a desired state with store parameters",
             lambda: "cache_urls[0]" in agent_log.read_text(), timeout=30)
    fleet.set_tampering({"web-3": {"set": {"cache_urls": [f"file://{evil_cache}"]}}})
    wait_for("web-3 to refuse caches the operator did not sign",
             rejected_with(fleet, "web-3", evil, "signature refused"), timeout=30)
    assert untouched("web-3") and not hosts["web-3"].has_path(evil), "nothing unsigned entered the store"
    fleet.cli("rollout", "cancel", rid)

    # 4. A revoked release, though genuinely signed and honestly served.
    fleet.set_tampering({})
    rev = fleet.build_system("web-1", "13-revoked")
    fleet.release("revoked-13", {"web-1": rev})
    out = fleet.cli("release", "revoke", "revoked-13", "--sign-key", str(fleet.op_secret)).stdout
    assert "revocation list #1 published" in out
    rid = fleet.deploy("revoked-13", "--hosts", "web-1", "--waves", "100%", "--soak", "0")
    wait_for("web-1 to refuse the revoked release", rejected_with(fleet, "web-1", rev, "revoked"), timeout=30)
    assert untouched("web-1") and not hosts["web-1"].has_path(rev)
    fleet.cli("rollout", "cancel", rid)
    audit = fleet.cli("--json", "audit", "--action", "machine.rejected").stdout
    assert audit.count("machine.rejected") >= 3, "the refusals are audited"

    # 5. Then an honest release still deploys everywhere.
    final = {n: fleet.build_system(n, "13-final") for n in hosts}
    fleet.release("final-13", final)
    r = fleet.wait_rollout(fleet.deploy("final-13", "--hosts", "*", "--waves", "100%", "--soak", "0"), TERMINAL)
    assert r["status"] == "completed", [e["message"] for e in r["events"]]
    for n, h in hosts.items():
        assert h.current() == final[n]

    # 6. Going back further than one step needs the operator's signed statement.
    fleet.cli("rollback", "--host", "web-2", "--to", old["web-2"])
    wait_for("web-2 to refuse going back two steps without a statement",
             rejected_with(fleet, "web-2", old["web-2"], "not its one step back"), timeout=30)
    assert hosts["web-2"].current() == final["web-2"]
    fleet.cli("rollback", "--host", "web-2", "--to", old["web-2"], "--sign-key", str(fleet.op_secret),
              "--reason", "scenario 13")
    wait_for("web-2 to go back with the statement", lambda: hosts["web-2"].current() == old["web-2"], timeout=60)
    wait_for("web-2 to confirm it", lambda: fleet.machine("web-2")["history"][0]["store_path"] == old["web-2"],
             timeout=60)


def test_14_an_agent_whose_state_directory_is_full_does_not_activate_and_says_why(fleet):
    all_reported(fleet)
    h = fleet.hosts["web-2"]
    h.stop_agent()
    # The state directory on a tiny tmpfs inside the host's own mount namespace, its files kept,
    # the rest of it filled.
    state = str(h.state)
    h.sh(f"mkdir -p /tmp/keep && cp -a {state}/. /tmp/keep/ && mount -t tmpfs -o size=256k tmpfs {state} && "
         f"cp -a /tmp/keep/. {state}/ && (dd if=/dev/zero of={state}/filler bs=4k 2>/dev/null || true)")
    assert "100%" in h.sh(f"df {state}").stdout
    h.start_agent()
    switches = len(h.switches())
    target = fleet.build_system("web-2", "14")
    fleet.release("full-14", {"web-2": target})
    rid = fleet.deploy("full-14", "--hosts", "web-2", "--waves", "100%", "--soak", "0")

    def refused_for_space():
        for e in fleet.api("/api/v1/audit?target=web-2&action=machine.activation_failed&limit=1000"):
            message = (e.get("detail") or {}).get("message") or ""
            if "cannot record the in-flight state" in message and "space" in message:
                return True
        return False

    wait_for("web-2 to refuse the activation for want of space", refused_for_space, timeout=60)
    assert len(h.switches()) == switches, "nothing was switched"
    assert h.current() == h.initial, "the host stays on what it runs"
    assert h.profile() == h.initial, "nor was the profile moved"
    # Space again: retried, the deployment goes through.
    h.sh(f"rm -f {state}/filler")
    r = fleet.wait_rollout(rid, TERMINAL, timeout=60)
    if r["status"] == "paused":
        fleet.cli("rollout", "resume", rid, "--retry-failed")
    else:
        rid = fleet.deploy("full-14", "--hosts", "web-2", "--waves", "100%", "--soak", "0")
    r = fleet.wait_rollout(rid, TERMINAL - {"paused"}, timeout=120)
    assert r["status"] == "completed", r["events"]
    assert h.current() == target


def test_15_a_host_with_only_a_token_enrolls_is_deployed_to_renews_and_is_cut_off_when_revoked(fleet_factory):
    fleet = fleet_factory(host_names=("web-1",), enroll=True, certificate_lifetime="45s")
    h = fleet.hosts["web-1"]
    wait_for("web-1 to enroll and report", reported(fleet, "web-1", h.initial), timeout=60)
    identity = h.state / "identity.pem"
    assert (identity.stat().st_mode & 0o077) == 0, "the host's key is its own"
    assert "PRIVATE KEY" in identity.read_text()
    first_expiry = fleet.machine("web-1")["certificate_expires_at"]
    assert "machine.enrolled" in audit_actions(fleet)

    # The token is spent: the same enrollment request again is refused.
    token = (h.dir / "enroll-token").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(fleet.pki / "ca.crt"))
    csr = identity.read_text()  # not a request at all: the token is checked first
    req = urllib.request.Request(f"https://127.0.0.1:{fleet.coordinator_port}/api/v1/enroll", method="POST",
                                 data=json.dumps({"machine_id": "web-1", "token": token, "csr": csr}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, context=ctx, timeout=10)
        raise AssertionError("a spent token enrolled again")
    except urllib.error.HTTPError as e:
        assert e.code == 403 and json.loads(e.read())["error"] == "invalid_token"

    # Deployed to with its enrolled identity.
    systems = {"web-1": fleet.build_system("web-1", "1")}
    fleet.release("good-1", systems)
    rid = fleet.deploy("good-1", "--hosts", "*", "--soak", "1")
    r = fleet.wait_rollout(rid, TERMINAL, timeout=120)
    assert r["status"] == "completed", r["events"]
    assert h.current() == systems["web-1"]

    # Renewed at two thirds of its 45 s, over its current certificate; it keeps polling with the new one.
    wait_for("a renewed certificate", lambda: fleet.machine("web-1")["certificate_expires_at"] != first_expiry,
             timeout=90)
    assert "machine.certificate_renewed" in audit_actions(fleet)
    seen = fleet.machine("web-1")["last_seen"]
    wait_for("a poll with the renewed certificate", lambda: fleet.machine("web-1")["last_seen"] != seen, timeout=20)

    # Revoked: refused from its next request on, and it stays out.
    fleet.cli("machines", "revoke", "web-1")
    log = h.dir / "logs" / "agent.log"
    wait_for("the agent to be refused", lambda: "revoked" in log.read_text(), timeout=30)
    seen = fleet.machine("web-1")["last_seen"]
    time.sleep(4)
    assert fleet.machine("web-1")["last_seen"] == seen, "a revoked host is not heard any more"
    assert fleet.machine("web-1")["revoked_at"]
    assert "machine.revoked" in audit_actions(fleet)


def metric(fleet, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{fleet.metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def logged_at(host, msg, **fields):
    """When the host's agent first logged `msg` with these fields (its logfmt ts, as epoch seconds)."""
    for line in (host.dir / "logs" / "agent.log").read_text(errors="replace").splitlines():
        if f"msg={msg}" not in line and f'msg="{msg}"' not in line:
            continue
        if all(f"{k}={v}" in line for k, v in fields.items()):
            ts = line.split(" ", 1)[0].removeprefix("ts=")
            return rfc3339(ts)
    return None


def rfc3339(text):
    return datetime.strptime(text.replace("Z", ""), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def test_16_long_polls_carry_every_wave_at_once_and_a_restart_brings_the_fleet_back_spread(fleet_factory):
    fleet = fleet_factory(agents=False)
    for h in fleet.hosts.values():
        # A minute between polls: without long polls a wave would wait up to that long for its hosts.
        h.write_agent_config(poll_interval_s=60, reconnect_jitter_s=3)
        h.start_agent()
    all_reported(fleet)
    wait_for("every agent to hold a long poll", lambda: metric(fleet, "nixfleet_coordinator_long_polls_held") == 3,
             timeout=30)
    systems = {n: fleet.build_system(n, "16") for n in fleet.hosts}
    fleet.release("long-16", systems)
    rid = fleet.deploy("long-16", "--hosts", "*", "--waves", "canary", "--soak", "1")
    r = fleet.wait_rollout(rid, TERMINAL, timeout=90)
    assert r["status"] == "completed", [e["kind"] for e in r["events"]]
    # Each host started fetching within a second of its dispatch: the canary's wave and the rest.
    for e in events(r, "host_dispatched"):
        host = fleet.hosts[e["hostname"]]
        fetched = logged_at(host, "fetching", store_path=systems[host.name])
        assert fetched is not None, f"{host.name} never fetched"
        lag = fetched - rfc3339(e["at"])
        print(f"{host.name} (wave {e['wave']}): dispatch to fetch {lag:.3f} s")
        assert lag <= 1.0, f"{host.name} heard of wave {e['wave']} {lag:.2f} s after its dispatch"

    # A restart under held polls: every agent loses its poll at once and comes back within the
    # reconnect spread (3 s here), not all in the same instant, and without an error storm.
    wait_for("every agent to hold a long poll again",
             lambda: metric(fleet, "nixfleet_coordinator_long_polls_held") == 3, timeout=30)
    failures_before = {n: (h.dir / "logs" / "agent.log").read_text(errors="replace").count("msg=\"poll failed\"")
                       for n, h in fleet.hosts.items()}
    fleet.coordinator.terminate()
    fleet.coordinator.wait(timeout=30)
    fleet.start_coordinator()
    restarted = time.time()
    back = wait_for("every agent to hold a long poll after the restart",
                    lambda: metric(fleet, "nixfleet_coordinator_long_polls_held") == 3 and time.time(), timeout=30)
    print(f"all three held again {back - restarted:.2f} s after the restart")
    assert back - restarted <= 3 + 2 + 2, "beyond the reconnect spread, one retry and slack"
    for n, h in fleet.hosts.items():
        failed = (h.dir / "logs" / "agent.log").read_text(errors="replace").count("msg=\"poll failed\"") - failures_before[n]
        assert failed <= 3, f"{n} failed {failed} polls across one restart"


def test_17_a_rollback_s_forensics_reach_the_operator(fleet):
    """The canary of a broken release rolls back; the coordinator holds what the host saw: the
    failing probe's answer, the unit that failed (listed before the switch back restarted it),
    that unit's journal, the switch's output and the closure difference."""
    all_reported(fleet)
    bad = {n: fleet.build_system(n, "17", "probe_fails") for n in fleet.hosts}
    fleet.release("bad-17", bad)
    rid = fleet.deploy("bad-17", "--hosts", "*", "--waves", "canary", "--soak", "1")
    r = fleet.wait_rollout(rid, TERMINAL, timeout=120)
    assert r["status"] == "paused", [e["kind"] for e in r["events"]]
    canary = r["waves"][0]["hosts"][0]
    c = fleet.hosts[canary]
    wait_for("the canary to run its previous system again", lambda: c.current() == c.initial, timeout=30)
    # The switch back cleared the failed unit's mark: only a listing taken before it names the unit.
    assert c.sh("ls /run/sim-units").stdout.split() == []

    shown = fleet.cli("machines", "show", canary, "--rollback").stdout
    print(shown)
    assert shown.startswith("rolled_back "), shown
    assert f"target      {bad[canary]}" in shown
    assert f"went back to {c.initial}" in shown
    assert "health gate failed" in shown
    assert "service (http): fail — unexpected status 500" in shown
    assert "HTTP 500" in shown and "failing 17" in shown  # the probe's answer, body included
    assert "failed units: sim-worker.service" in shown
    assert "cannot open /var/lib/sim-worker/queue: permission denied" in shown  # its journal
    assert "starting the following units: sim-service.service, sim-worker.service" in shown  # the switch
    assert "closure difference (" in shown and "→" in shown

    report = json.loads(fleet.cli("--json", "machines", "show", canary, "--rollback").stdout)
    fx = report["forensics"]
    assert report["kind"] == "rolled_back" and report["store_path"] == bad[canary]
    assert fx["target"] == bad[canary] and fx["previous"] == c.initial
    assert fx["failed_units"] == ["sim-worker.service"]
    assert fx["closure_changes"] >= 1 and any("17" in line for line in fx["closure_diff"]), fx["closure_diff"]
    assert fx["notes"] == [], fx["notes"]
    # The audit entry of the rollback points at that report.
    entries = [e for e in json.loads(fleet.cli("--json", "audit", "--limit", "1000").stdout)
               if e["action"] == "machine.rolled_back" and e["target"] == canary]
    assert entries and entries[-1]["detail"]["report_seq"] == report["seq"] and entries[-1]["detail"]["forensics"]

    # A host that never failed has nothing to show.
    other = next(n for n in fleet.hosts if n != canary)
    assert "no rollback or failed activation" in fleet.cli("machines", "show", other, "--rollback").stdout


class Receiver:
    """A webhook receiver on loopback that verifies every delivery's signature, as a real one would.
    stop() takes it down (connections refused); start() brings it back on the same port."""

    def __init__(self, secret):
        self.secret = secret.encode()
        self.deliveries = []  # (delivery id, event, body) of those that verified
        self.forged = 0
        self.port = None
        self.server = None

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sig = dict(part.split("=", 1) for part in self.headers.get("X-Nixfleet-Signature", "").split(","))
                mac = hmac.new(receiver.secret, sig.get("t", "").encode() + b"." + body, hashlib.sha256).hexdigest()
                fresh = abs(time.time() - int(sig.get("t", "0"))) < 300
                if not (hmac.compare_digest(mac, sig.get("v1", "")) and fresh):
                    receiver.forged += 1
                    self.send_response(401)
                else:
                    receiver.deliveries.append((self.headers["X-Nixfleet-Delivery"], self.headers["X-Nixfleet-Event"],
                                                json.loads(body)))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def events(self):
        return [(e, b["target"]) for _, e, b in self.deliveries]


def test_18_signed_webhooks_reach_a_receiver_and_are_retried_after_it_was_down(fleet):
    rx = Receiver("sim-webhook-secret-0123456789")
    rx.start()
    secret_file = fleet.root / "webhook.secret"
    secret_file.write_text("sim-webhook-secret-0123456789\n")
    os.chmod(secret_file, 0o600)
    hook = fleet.cli("webhooks", "add", f"http://127.0.0.1:{rx.port}/nixfleet",
                     "--events", "machine.rolled_back,rollout.paused", "--secret-file", str(secret_file)).stdout.strip()
    all_reported(fleet)

    bad = {n: fleet.build_system(n, "18", "probe_fails") for n in fleet.hosts}
    fleet.release("bad-18", bad)
    rid = fleet.deploy("bad-18", "--hosts", "*", "--waves", "canary", "--soak", "1")
    r = fleet.wait_rollout(rid, TERMINAL, timeout=120)
    assert r["status"] == "paused"
    canary = r["waves"][0]["hosts"][0]
    wait_for("the rollback and the pause at the receiver", lambda: len(rx.deliveries) >= 2, timeout=30)
    assert sorted(rx.events()) == sorted([("machine.rolled_back", canary), ("rollout.paused", rid)]), rx.events()
    rolled = next(b for _, e, b in rx.deliveries if e == "machine.rolled_back")
    assert rolled["detail"]["store_path"] == bad[canary] and rolled["detail"]["forensics"] is True
    assert rx.forged == 0

    # The receiver goes down; a second broken release fails on the canary while it is away.
    rx.stop()
    fleet.cli("rollout", "cancel", rid)
    bad2 = {n: fleet.build_system(n, "18b", "probe_fails") for n in fleet.hosts}
    fleet.release("bad-18b", bad2)
    rid2 = fleet.deploy("bad-18b", "--hosts", canary, "--waves", "canary", "--soak", "1")
    assert fleet.wait_rollout(rid2, TERMINAL, timeout=120)["status"] == "paused"
    wait_for("attempts against the receiver while it is down",
             lambda: any(d["attempts"] >= 1 and d["state"] == "pending"
                         for d in json.loads(fleet.cli("--json", "webhooks", "deliveries", hook).stdout)), timeout=30)
    time.sleep(3)
    assert len(rx.deliveries) == 2

    rx.start()  # back, on the same port
    wait_for("the deliveries made while it was down", lambda: len(rx.deliveries) >= 4, timeout=90)
    later = rx.events()[2:]
    assert sorted(set(later)) == sorted([("machine.rolled_back", canary), ("rollout.paused", rid2)]), later
    # At least once, never doubled beyond that: every delivery id stands for one event.
    ids = {}
    for d, e, b in rx.deliveries:
        assert ids.setdefault(d, (e, b["target"])) == (e, b["target"])
    assert len(ids) == 4, ids
    log = json.loads(fleet.cli("--json", "webhooks", "deliveries", hook).stdout)
    assert {d["state"] for d in log} == {"delivered"}, log
    assert any(d["attempts"] >= 2 for d in log), log
    assert rx.forged == 0
    rx.stop()
