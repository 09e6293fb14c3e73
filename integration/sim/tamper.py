"""A compromised coordinator, as agents see it: a TLS server with the coordinator's own certificate
in front of the real coordinator. It forwards every request (with the requesting host's client
certificate), and rewrites the desired states it passes back as the rules file says, so that the
agents' refusals can be proven against a coordinator that lies with everything it has.

Rules (JSON, re-read on every request): {"<machine id>": {"set": {field: value, ...},
"replay": <a desired state to serve instead>, "bump_attempt": true}}. A rewritten answer gets a
fresh ETag, as a real coordinator would send.
"""
import argparse
import hashlib
import http.client
import http.server
import json
import ssl
import sys
from pathlib import Path

PASS_HEADERS = ("if-none-match", "x-nixfleet-protocol", "content-type", "authorization", "user-agent")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen-port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--pki", required=True)
    p.add_argument("--rules", required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args()
    pki = Path(args.pki)
    rules_file = Path(args.rules)
    log = open(args.log, "a", buffering=1)

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki / "coordinator.crt", pki / "coordinator.key")
    server_ctx.load_verify_locations(pki / "ca.crt")
    server_ctx.verify_mode = ssl.CERT_OPTIONAL  # agents present theirs; the operator CLI does not

    def upstream_ctx(cn):
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        if cn and (pki / f"{cn}.crt").exists():
            ctx.load_cert_chain(pki / f"{cn}.crt", pki / f"{cn}.key")
        return ctx

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            log.write((fmt % a) + "\n")

        def client_cn(self):
            cert = self.connection.getpeercert()
            for rdn in (cert or {}).get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        return v
            return None

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() in PASS_HEADERS}
            cn = self.client_cn()
            conn = http.client.HTTPSConnection("127.0.0.1", args.upstream_port, context=upstream_ctx(cn), timeout=70)
            conn.request(self.command, self.path, body=body, headers=headers)
            res = conn.getresponse()
            data = res.read()
            out_headers = [(k, v) for k, v in res.getheaders()
                           if k.lower() not in ("content-length", "connection", "transfer-encoding")]
            conn.close()
            status = res.status
            if self.command == "GET" and self.path.split("?")[0].endswith("/desired") and cn:
                status, data, out_headers = self.tamper(cn, status, data, out_headers)
            self.send_response(status)
            for k, v in out_headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if data:
                self.wfile.write(data)

        def tamper(self, cn, status, data, headers):
            try:
                rules = json.loads(rules_file.read_text()).get(cn)
            except (OSError, ValueError):
                rules = None
            if not rules:
                return status, data, headers
            if "replay" in rules:
                desired = dict(rules["replay"])
            elif status == 200:
                desired = json.loads(data)
            elif status == 304 and "last" in rules:
                desired = dict(rules["last"])
            else:
                return status, data, headers
            desired.update(rules.get("set", {}))
            if rules.get("bump_attempt"):
                desired["attempt"] = int(desired.get("attempt", 0)) + 1
            body = json.dumps(desired).encode()
            etag = '"t' + hashlib.sha256(body).hexdigest()[:30] + '"'
            if self.headers.get("If-None-Match") == etag:
                return 304, b"", [("ETag", etag), ("X-Nixfleet-Protocol", "1")]
            log.write(f"tampered {cn}: {json.dumps(rules.get('set', {}))} replay={'replay' in rules}\n")
            headers = [(k, v) for k, v in headers if k.lower() not in ("etag", "content-type")]
            return 200, body, headers + [("ETag", etag), ("Content-Type", "application/json")]

        def do_GET(self):
            self.forward()

        def do_POST(self):
            self.forward()

        def do_PUT(self):
            self.forward()

        def do_DELETE(self):
            self.forward()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", args.listen_port), Handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    print("ready", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
