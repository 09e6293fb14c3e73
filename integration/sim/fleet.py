"""Fleet-in-a-box: a real coordinator (TLS, client CA), a signed binary cache served by nginx,
and hosts that each live in their own mount + network namespace with their own /nix and a real
nixfleet-agent. Hosts reach the outside only through a forwarder per host (unix sockets, then
loopback TCP), which is also the fault injector. Needs root, nix, nginx, socat, openssl.
"""
import json
import sys
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# Inside every host namespace: the coordinator and the cache at fixed loopback ports.
NS_COORDINATOR_PORT = 8443
NS_CACHE_PORT = 8081

NIX_BUILD_CONFIG = "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command flakes\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, check=True, env=None, timeout=300, **kw):
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    r = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def wait_for(what, predicate, timeout=60.0, interval=0.1):
    """Polls `predicate` until it returns a truthy value; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # the state is not there yet (connection refused, missing file…)
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Host:
    def __init__(self, fleet, name):
        self.fleet = fleet
        self.name = name
        self.dir = fleet.root / "hosts" / name
        self.nix = self.dir / "nix"
        self.state = self.dir / "state"
        self.ns = None
        self.agent = None
        self.forwarder = None
        self.socats = []
        self.initial = None

    # --- namespace -----------------------------------------------------------------------
    def create(self):
        for d in (self.nix, self.state, self.dir / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        self.link_file.write_text("up\n")
        script = (
            "set -e; ip link set lo up; mount --bind {nix} /nix; mount -t tmpfs tmpfs /run; "
            "echo ready; exec sleep infinity"
        ).format(nix=self.nix)
        self.ns = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--", "/bin/sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.ns.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{self.name}: namespace setup failed: {self.ns.stderr.read()}")
        self.forwarder = subprocess.Popen(
            [sys.executable, str(HERE / "forwarder.py"), "--mode-file", str(self.link_file),
             "--route", f"{self.dir / 'coordinator.sock'}=127.0.0.1:{self.fleet.coordinator_port}",
             "--route", f"{self.dir / 'cache.sock'}=127.0.0.1:{self.fleet.cache_port}"],
            stdout=subprocess.PIPE, stderr=open(self.dir / "logs" / "forwarder.log", "a"), text=True)
        if self.forwarder.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{self.name}: forwarder did not start")
        for port, sock in ((NS_COORDINATOR_PORT, "coordinator.sock"), (NS_CACHE_PORT, "cache.sock")):
            self.socats.append(self.spawn(
                ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{self.dir / sock}"],
                log="socat.log"))
        wait_for(f"{self.name}'s forwarders", lambda: self.sh(
            f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {NS_CACHE_PORT}), 1)'",
            check=False).returncode == 0, timeout=10)

    @property
    def link_file(self):
        return self.dir / "link"

    def prefix(self):
        return ["nsenter", "-t", str(self.ns.pid), "-m", "-n", "--"]

    def env(self):
        return {"SIM_HOST_DIR": str(self.dir), "NIX_CONFIG": NIX_BUILD_CONFIG}

    def sh(self, command, check=True, timeout=120):
        return run(self.prefix() + ["/bin/sh", "-c", command], check=check, env=self.env(), timeout=timeout)

    def spawn(self, argv, log, extra_env=None):
        return subprocess.Popen(self.prefix() + argv, stdout=subprocess.DEVNULL,
                                stderr=open(self.dir / "logs" / log, "a"),
                                env={**os.environ, **self.env(), **(extra_env or {})})

    # --- system ------------------------------------------------------------------------
    def install_initial(self, path):
        """Fetches `path` from the cache into this host's store, makes it generation 1 and switches."""
        self.sh(f"nix copy --from http://127.0.0.1:{NS_CACHE_PORT} --option require-sigs true "
                f"--option trusted-public-keys '{self.fleet.op_public}' {path}")
        self.sh(f"nix-env -p /nix/var/nix/profiles/system --set {path}")
        self.sh(f"{path}/bin/switch-to-configuration switch")
        self.initial = path
        wait_for(f"{self.name}'s service", lambda: self.service_ok(), timeout=20)

    def current(self):
        r = self.sh("readlink /run/current-system", check=False)
        return r.stdout.strip() or None

    def profile(self):
        return self.sh("readlink -f /nix/var/nix/profiles/system").stdout.strip()

    def generations(self):
        return self.sh("nix-env -p /nix/var/nix/profiles/system --list-generations").stdout.strip().splitlines()

    def service(self):
        r = self.sh("python3 -c 'import urllib.request,sys\n"
                    "try:\n r=urllib.request.urlopen(\"http://127.0.0.1:8080/health\", timeout=2); print(r.status, r.read().decode().strip())\n"
                    "except urllib.error.HTTPError as e: print(e.code)\n"
                    "except Exception as e: print(0)'", check=False)
        return r.stdout.strip()

    def service_ok(self):
        return self.service().startswith("200")

    def switches(self):
        f = self.dir / "switches.log"
        return f.read_text().splitlines() if f.exists() else []

    def has_path(self, path):
        return self.sh(f"nix-store --check-validity {path}", check=False).returncode == 0

    # --- agent -------------------------------------------------------------------------
    def write_agent_config(self, **overrides):
        f = self.fleet
        if f.enroll:
            # Only a one-time token: the agent makes its own key and enrolls with the fleet CA.
            tls = {"ca_file": str(f.pki / "ca.crt")}
            enrolling = {"enroll_token_file": str(self.dir / "enroll-token")}
        else:
            tls = {"ca_file": str(f.pki / "ca.crt"), "cert_file": str(f.pki / f"{self.name}.crt"),
                   "key_file": str(f.pki / f"{self.name}.key")}
            enrolling = {}
        cfg = {
            "machine_id": self.name,
            "coordinator_url": f"https://127.0.0.1:{NS_COORDINATOR_PORT}",
            "tls": tls, **enrolling,
            "poll_interval_s": 1, "retry_interval_s": 2, "startup_jitter_s": 0, "request_timeout_s": 5,
            "health_interval_s": 5, "health_config": str(self.dir / "health.json"),
            "state_dir": str(self.state), "profile": "/nix/var/nix/profiles/system",
            "trusted_keys": [f.op_public], "cache_public_keys": [f.op_public],
            "fetch_timeout_s": 60, "min_free_mb": 1, "activation_timeout_s": 8,
            "switch_runner": "direct", "control_socket": str(self.dir / "control.sock"),
            "log_level": "debug",
        }
        cfg.update(overrides)
        (self.dir / "agent.json").write_text(json.dumps(cfg, indent=2))

    def write_health_config(self, probes=None, **gate):
        g = {"grace_s": 0.3, "interval_s": 0.3, "soak_s": 1, "failure_threshold": 2, "success_threshold": 1,
             "timeout_s": 15}
        g.update(gate)
        if probes is None:
            probes = [{"name": "service", "type": "http", "url": "http://127.0.0.1:8080/health",
                       "expect_status": [200], "timeout_s": 2}]
        (self.dir / "health.json").write_text(json.dumps({"gate": g, "probes": probes}, indent=2))

    def start_agent(self):
        # systemd does not run here: the agent's forensics ask the sim's stand-in systemctl and journalctl.
        path = f"{HERE / 'standins'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        self.agent = self.spawn([str(self.fleet.bin / "nixfleet-agent"), "run", "--config", str(self.dir / "agent.json")],
                                log="agent.log", extra_env={"PATH": path})

    def stop_agent(self, sig=signal.SIGTERM):
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(sig)
            try:
                self.agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        self.agent = None

    def control(self, command):
        return run([str(self.fleet.bin / "nixfleet-agent"), command, "--socket", str(self.dir / "control.sock")],
                   check=False)

    def start_sshd(self):
        """An sshd inside the namespace (on its own 127.0.0.1:22), reachable from the root namespace
        on the returned loopback port through socat and a unix socket; returns (port, client key)."""
        d = self.dir / "ssh"
        d.mkdir(exist_ok=True)
        for key in ("host", "client"):
            if not (d / key).exists():
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)])
        shutil.copy(d / "client.pub", d / "authorized_keys")
        (d / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort 22\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile {d / 'sshd.pid'}\nSetEnv SIM_HOST_DIR={self.dir}\n")
        self.sh("mkdir -p /run/sshd")
        self.socats.append(self.spawn(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], log="sshd.log"))
        self.socats.append(self.spawn(["socat", f"UNIX-LISTEN:{d / 'ssh.sock'},fork", "TCP:127.0.0.1:22"], log="socat.log"))
        port = free_port()
        self.socats.append(subprocess.Popen(
            ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{d / 'ssh.sock'}"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "logs" / "socat.log", "a")))
        wait_for(f"{self.name}'s sshd", lambda: run(
            ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-i", str(d / "client"), "-p", str(port), "root@127.0.0.1", "true"],
            check=False).returncode == 0, timeout=20)
        return port, d / "client"

    def status(self):
        r = self.control("status")
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: status: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def set_link(self, mode):
        self.link_file.write_text(mode + "\n")

    def teardown(self):
        self.stop_agent()
        if self.ns is not None:
            self.sh("[ -f /run/sim-service.pid ] && kill $(cat /run/sim-service.pid) || true", check=False)
        for p in self.socats + [self.forwarder, self.ns]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


class Fleet:
    def __init__(self, root, build_dir, host_names=("web-1", "web-2", "web-3"), enroll=True,
                 certificate_lifetime=None):
        self.root = Path(root)
        self.bin = Path(build_dir).resolve() / "bin"
        self.pki = self.root / "pki"
        self.cache = self.root / "cache"
        self.hosts = {n: Host(self, n) for n in host_names}
        self.coordinator = None
        self.nginx = None
        self.proxy = None  # a compromised coordinator in front of the real one (compromise())
        self.coordinator_port = free_port()
        self.cache_port = free_port()
        self.metrics_port = free_port()
        self.ui_port = free_port()  # the dashboard, with the coordinator's own certificate
        self.key_file = self.root / "admin.key"
        self.op_secret = self.root / "op.sec"
        self.op_public = None
        self.nonce = str(time.time_ns())
        # With enroll (the default), the coordinator runs the fleet CA (--ca-dir) and hosts join
        # with tokens from `nixfleet machines enroll`, as in production; without it, certificates
        # are made for them with openssl (an operator's own PKI).
        self.enroll = enroll
        self.certificate_lifetime = certificate_lifetime

    # --- setup -------------------------------------------------------------------------
    def start(self, agents=True):
        self.root.mkdir(parents=True, exist_ok=True)
        self._pki()
        self.make_key("sim-op-1", "op")
        self.op_public = (self.root / "op.pub").read_text().strip()
        self._cache()
        self.start_coordinator()
        key = run([str(self.bin / "nixfleet-coordinator"), "keys", "create", "--db", str(self.root / "coordinator.db"),
                   "--name", "operator", "--role", "admin"]).stdout.strip()
        self.key_file.write_text(key + "\n")
        os.chmod(self.key_file, 0o600)
        base = {n: self.build_system(n, "0") for n in self.hosts}
        self.push(list(base.values()))
        for h in self.hosts.values():
            h.create()
            h.install_initial(base[h.name])
            h.write_health_config()
            if self.enroll:
                token = self.cli("machines", "enroll", h.name, "--ttl", "10m").stdout.strip()
                (h.dir / "enroll-token").write_text(token + "\n")
                os.chmod(h.dir / "enroll-token", 0o600)
                # Where the tampering proxy looks for a host's identity to speak upstream as it.
                for suffix in ("crt", "key"):
                    link = self.pki / f"{h.name}.{suffix}"
                    if not link.is_symlink():
                        link.symlink_to(h.state / "identity.pem")
            h.write_agent_config()
            if agents:
                h.start_agent()
        return self

    def _pki(self):
        self.pki.mkdir(parents=True, exist_ok=True)
        p = str(self.pki)
        if self.enroll:
            coord = str(self.bin / "nixfleet-coordinator")
            run([coord, "ca", "init", "--dir", f"{p}/fleet-ca"])
            shutil.copy(f"{p}/fleet-ca/ca.crt", f"{p}/ca.crt")
            run([coord, "ca", "server-cert", "--dir", f"{p}/fleet-ca", "--name", "127.0.0.1",
                 "--cert-out", f"{p}/coordinator.crt", "--key-out", f"{p}/coordinator.key"])
            return
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run(["openssl", "req", "-x509", *ec, "-keyout", f"{p}/ca.key", "-out", f"{p}/ca.crt", "-days", "2",
             "-subj", "/CN=nixfleet-sim-ca"])

        def issue(name, cn, ext):
            (self.pki / f"{name}.ext").write_text(ext + "\n")
            run(["openssl", "req", *ec, "-keyout", f"{p}/{name}.key", "-out", f"{p}/{name}.csr", "-subj", f"/CN={cn}"])
            run(["openssl", "x509", "-req", "-in", f"{p}/{name}.csr", "-CA", f"{p}/ca.crt", "-CAkey", f"{p}/ca.key",
                 "-CAcreateserial", "-out", f"{p}/{name}.crt", "-days", "2", "-extfile", f"{p}/{name}.ext"])

        issue("coordinator", "127.0.0.1", "subjectAltName=IP:127.0.0.1")
        for n in self.hosts:
            issue(n, n, "extendedKeyUsage=clientAuth")

    def _cache(self):
        self.cache.mkdir(parents=True, exist_ok=True)
        conf = self.root / "nginx.conf"
        conf.write_text(f"""
user root;
daemon off;
worker_processes 1;
pid {self.root}/nginx.pid;
error_log {self.root}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {self.root}/nginx-tmp;
  proxy_temp_path {self.root}/nginx-tmp;
  fastcgi_temp_path {self.root}/nginx-tmp;
  uwsgi_temp_path {self.root}/nginx-tmp;
  scgi_temp_path {self.root}/nginx-tmp;
  types {{ text/x-nix-narinfo narinfo; }}
  server {{
    listen 127.0.0.1:{self.cache_port};
    root {self.cache};
  }}
}}
""")
        (self.root / "nginx-tmp").mkdir(exist_ok=True)
        self.nginx = subprocess.Popen(["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=open(self.root / "nginx.log", "a"))
        wait_for("nginx", lambda: socket.create_connection(("127.0.0.1", self.cache_port), 1).close() or True)

    def start_coordinator(self, port=None):
        self.coordinator = subprocess.Popen(
            [str(self.bin / "nixfleet-coordinator"), "serve", "--db", str(self.root / "coordinator.db"),
             "--listen", f"127.0.0.1:{port or self.coordinator_port}", "--tls-cert", str(self.pki / "coordinator.crt"),
             "--tls-key", str(self.pki / "coordinator.key"),
             *(["--ca-dir", str(self.pki / "fleet-ca")] if self.enroll else ["--client-ca", str(self.pki / "ca.crt")]),
             *(["--certificate-lifetime", self.certificate_lifetime] if self.certificate_lifetime else []),
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}", "--ui-listen", f"127.0.0.1:{self.ui_port}",
             "--poll-hint", "1", "--log-level", "debug"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "coordinator.log", "a"))
        wait_for("the coordinator", lambda: self.healthz(port))

    def compromise(self):
        """Moves the real coordinator to another port and puts a tampering proxy (tamper.py) with the
        coordinator's own TLS identity where it was: every agent and the CLI now talk to a
        coordinator that lies as `rules` ({host: rule}, written with set_tampering) says."""
        self.rules = self.root / "tamper.json"
        self.rules.write_text("{}")
        self.coordinator.terminate()
        self.coordinator.wait(timeout=30)
        upstream = free_port()
        self.start_coordinator(port=upstream)
        self.proxy = subprocess.Popen(
            [sys.executable, str(HERE / "tamper.py"), "--listen-port", str(self.coordinator_port),
             "--upstream-port", str(upstream), "--pki", str(self.pki), "--rules", str(self.rules),
             "--log", str(self.root / "tamper.log")],
            stdout=subprocess.PIPE, stderr=open(self.root / "tamper.log", "a"), text=True)
        assert self.proxy.stdout.readline().strip() == "ready"
        wait_for("the tampering proxy", lambda: self.healthz())

    def set_tampering(self, rules):
        tmp = self.rules.with_suffix(".tmp")
        tmp.write_text(json.dumps(rules))
        tmp.replace(self.rules)

    def kill_coordinator(self, sig=signal.SIGKILL):
        self.coordinator.send_signal(sig)
        self.coordinator.wait(timeout=30)

    def healthz(self, port=None):
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        with urllib.request.urlopen(f"https://127.0.0.1:{port or self.coordinator_port}/healthz", context=ctx,
                                    timeout=2) as r:
            return r.status == 200

    def stop(self):
        for h in self.hosts.values():
            try:
                h.teardown()
            except Exception:
                pass
        for p in (self.proxy, self.coordinator, self.nginx):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()

    def collect(self, dest):
        """Copies every log and switch record into `dest` for diagnosis."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("coordinator.log", "nginx.log", "nginx-error.log", "tamper.log"):
            if (self.root / f).exists():
                shutil.copy(self.root / f, dest / f)
        for h in self.hosts.values():
            hd = dest / h.name
            hd.mkdir(exist_ok=True)
            for f in list((h.dir / "logs").glob("*.log")) + [h.dir / "switches.log", h.dir / "service.log",
                                                             h.dir / "agent.json", h.dir / "health.json"]:
                if f.exists():
                    shutil.copy(f, hd / f.name)

    # --- systems and releases ----------------------------------------------------------
    def build_system(self, host, version, mode="good"):
        r = run(["nix-build", "--no-out-link", str(HERE / "system.nix"), "--argstr", "host", host,
                 "--argstr", "version", version, "--argstr", "mode", mode, "--argstr", "nonce", self.nonce],
                env={"NIX_CONFIG": NIX_BUILD_CONFIG})
        return r.stdout.strip().splitlines()[-1]

    def make_key(self, name, file_stem):
        """A fresh Nix signing key pair (secret file mode 0600); returns the secret key's path."""
        secret = self.root / f"{file_stem}.sec"
        run(["nix-store", "--generate-binary-cache-key", name, str(secret), str(self.root / f"{file_stem}.pub")])
        os.chmod(secret, 0o600)
        return secret

    def push(self, paths, key=None):
        key = key or self.op_secret
        run(["nix", "store", "sign", "--recursive", "--key-file", str(key), *paths], env={"NIX_CONFIG": NIX_BUILD_CONFIG})
        run(["nix", "copy", "--to", f"file://{self.cache}", *paths], env={"NIX_CONFIG": NIX_BUILD_CONFIG})

    def release(self, release_id, systems, sign_key=None, push=True):
        """Registers `systems` ({host: store path}) as a release through the CLI (signing and pushing)."""
        args = ["release", "create", "--id", release_id, "--sign-key", str(sign_key or self.op_secret),
                "--cache-url", f"http://127.0.0.1:{NS_CACHE_PORT}"]
        if push:
            args += ["--push-to", f"file://{self.cache}"]
        for h, p in systems.items():
            args += ["--entry", f"{h}={p}"]
        return self.cli(*args)

    # --- operator side -----------------------------------------------------------------
    def cli(self, *args, check=True, timeout=300):
        env = {"NIXFLEET_COORDINATOR": f"https://127.0.0.1:{self.coordinator_port}",
               "NIXFLEET_API_KEY_FILE": str(self.key_file), "NIXFLEET_CA_FILE": str(self.pki / "ca.crt"),
               "NIXFLEET_CONFIG": str(self.root / "cli-config.json"), "NIX_CONFIG": NIX_BUILD_CONFIG}
        if not (self.root / "cli-config.json").exists():
            (self.root / "cli-config.json").write_text("{}")
        return run([str(self.bin / "nixfleet"), *args], check=check, env=env, timeout=timeout)

    def api(self, path, method="GET", body=None):
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        req = urllib.request.Request(f"https://127.0.0.1:{self.coordinator_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + self.key_file.read_text().strip(),
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                data = r.read()
                return json.loads(data) if data else None
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read().decode()}")

    def machine(self, name):
        return self.api(f"/api/v1/machines/{name}")

    def rollout(self, rid):
        return self.api(f"/api/v1/rollouts/{rid}")

    def deploy(self, release_id, *args):
        out = self.cli("--json", "deploy", "--release", release_id, *args).stdout
        return json.loads(out)["id"]

    def wait_rollout(self, rid, statuses, timeout=90):
        return wait_for(f"rollout {rid} to be {statuses}",
                        lambda: (lambda r: r if r["status"] in statuses else None)(self.rollout(rid)), timeout=timeout)
