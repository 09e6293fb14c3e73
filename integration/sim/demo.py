#!/usr/bin/env python3
"""The nixfleet demo: a coordinator and three hosts on this machine (fleet-in-a-box), a good
release rolled out in waves, a broken one caught by the canary, and the trail it leaves.

Usage: demo.py [--keep] [--build-dir DIR]   (run by scripts/demo, as root)
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import REPO, Fleet, wait_for  # noqa: E402

TERMINAL = {"completed", "paused", "halted", "reverted", "cancelled"}
shown = []


def say(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(title, output):
    print(f"\033[2m$ {title}\033[0m")
    print(output.rstrip())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="store_true", help="leave the fleet running at the end")
    p.add_argument("--build-dir", default=str(REPO / "build" / "dev"))
    args = p.parse_args()
    start = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="nixfleet-demo-"))
    fleet = Fleet(root, args.build_dir)
    try:
        say("Starting a coordinator (TLS and its fleet CA), a signed binary cache and three hosts")
        print("Each host is a mount + network namespace with its own /nix store and system profile,\n"
              "running a real nixfleet-agent; it reaches the coordinator and the cache only through a\n"
              "forwarder on loopback. The systems are tiny Nix derivations with a switch-to-configuration\n"
              "that starts a small HTTP service, which the agents' health probes check. Each host gets\n"
              "only a one-time token (nixfleet machines enroll): it makes its own key and enrolls.")
        fleet.start()
        for h in fleet.hosts.values():
            wait_for(f"{h.name} to report", lambda h=h: fleet.machine(h.name).get("current_path") == h.initial, 30)
        show("nixfleet status", fleet.cli("status").stdout)
        shown.append("three hosts enrolled with one-time tokens, registered and reported the generation they run")

        say("Release v1: build every host's system, sign the closures and the entries, push, register")
        fleet.release("base", {n: h.initial for n, h in fleet.hosts.items()})
        v1 = {n: fleet.build_system(n, "1") for n in fleet.hosts}
        show("nixfleet release create --id v1 --entry … --push-to file://… --sign-key op.sec",
             fleet.release("v1", v1).stdout)
        show("nixfleet release diff base v1", fleet.cli("release", "diff", "base", "v1").stdout)

        say("Deploying v1 in waves: a canary first, then everyone")
        out = fleet.cli("deploy", "--release", "v1", "--hosts", "*", "--waves", "canary", "--soak", "2", "--wait",
                        timeout=300)
        show("nixfleet deploy --release v1 --hosts '*' --waves canary --soak 2 --wait", out.stdout)
        for n, h in fleet.hosts.items():
            assert h.current() == v1[n] and h.service_ok(), f"{n} did not end on v1"
        shown.append("v1 rolled out canary-first; every host switched, passed its health gate and was confirmed")

        say("Release v2 is broken: its service fails its health check")
        v2 = {n: fleet.build_system(n, "2", "probe_fails") for n in fleet.hosts}
        fleet.release("v2", v2)
        r = fleet.cli("deploy", "--release", "v2", "--hosts", "*", "--waves", "canary", "--soak", "2", "--wait",
                      check=False, timeout=300)
        show("nixfleet deploy --release v2 --hosts '*' --waves canary --soak 2 --wait", r.stdout)
        print(f"(exit code {r.returncode}: the rollout did not complete)")
        rollouts = json.loads(fleet.cli("--json", "rollout", "list", "--status", "paused").stdout)
        canary = rollouts[0]["waves"][0]["hosts"][0]
        c = fleet.hosts[canary]
        wait_for("the canary to run v1 again", lambda: c.current() == v1[canary] and c.service_ok(), 60)
        others = [n for n in fleet.hosts if n != canary]
        untouched = all(fleet.hosts[n].current() == v1[n] for n in others)
        print(f"canary {canary}: switched to v2, failed its gate, rolled itself back to v1; "
              f"{', '.join(others)}: {'never touched' if untouched else 'TOUCHED'}")
        show("nixfleet status", fleet.cli("status").stdout)
        shown.append(f"v2's canary ({canary}) rolled itself back within seconds and the rollout paused; "
                     "no other host was touched")

        say("The trail: release diff and the audit log, verified")
        show("nixfleet release diff v1 v2", fleet.cli("release", "diff", "v1", "v2").stdout)
        audit = fleet.cli("audit", "--limit", "1000").stdout.splitlines()
        show("nixfleet audit (last 12 of %d rows)" % (len(audit) - 1), "\n".join(audit[:1] + audit[-12:]))
        verify = fleet.cli("audit", "--verify").stdout
        show("nixfleet audit --verify", verify)
        shown.append("the audit log holds every change and its hash chain verifies")

        say(f"Done in {time.monotonic() - start:.0f} s. What this showed:")
        for i, s in enumerate(shown, 1):
            print(f"  {i}. {s}")
        if args.keep:
            print(f"\nThe fleet keeps running (work directory {root}). Try:\n"
                  f"  export NIXFLEET_COORDINATOR=https://127.0.0.1:{fleet.coordinator_port} "
                  f"NIXFLEET_API_KEY_FILE={fleet.key_file} NIXFLEET_CA_FILE={fleet.pki / 'ca.crt'}\n"
                  f"  {fleet.bin / 'nixfleet'} status\n"
                  f"or open the dashboard at https://127.0.0.1:{fleet.ui_port}/ui/ (its certificate is the demo's own CA's)\n"
                  f"and sign in with the key in {fleet.key_file}.\nPress Ctrl-C to tear it down.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0
    except Exception as e:
        dest = REPO / "build" / "demo-failure"
        fleet.collect(dest)
        print(f"\nthe demo failed: {e}\nlogs: {dest}", file=sys.stderr)
        return 1
    finally:
        fleet.stop()
        if not os.environ.get("NIXFLEET_DEMO_KEEP_DIR"):
            import shutil
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
