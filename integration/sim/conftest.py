"""Fixtures of the fleet-in-a-box scenarios: a fresh fleet per test; a failed test leaves the
coordinator log, each agent's log and the switch records in build/sim-failures/<test>/."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from fleet import REPO, Fleet


def build_dir():
    return Path(os.environ.get("NIXFLEET_BUILD_DIR", REPO / "build" / "dev"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


def make_fleet(request, **kw):
    if os.geteuid() != 0:
        pytest.skip("the fleet-in-a-box needs root (namespaces, mounts)")
    for tool in ("nix", "nginx", "socat", "unshare", "nsenter", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    root = Path(tempfile.mkdtemp(prefix="nixfleet-sim-"))
    fleet = Fleet(root, build_dir(), **kw)
    return fleet, root


@pytest.fixture
def fleet_factory(request):
    made = []

    def factory(agents=True, **kw):
        f, root = make_fleet(request, **kw)
        made.append((f, root))
        return f.start(agents=agents)

    yield factory
    failed = any(getattr(request.node, "report_" + w, None) is not None and
                 getattr(request.node, "report_" + w).failed for w in ("setup", "call"))
    for f, root in made:
        f.stop()
        if failed:
            dest = Path(os.environ.get("NIXFLEET_SIM_ARTIFACTS", REPO / "build" / "sim-failures")) / request.node.name
            f.collect(dest)
            print(f"\nlogs of the failed scenario: {dest}")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fleet(fleet_factory):
    return fleet_factory()
