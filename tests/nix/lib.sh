# Shared by the Nix checks (sourced): failing with a message, and a coordinator's TLS credentials
# as systemd would hand them over (tls-cert, tls-key, client-ca in one directory).
fail() { echo "FAIL: $*" >&2; exit 1; }
make_credentials() {
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1/tls-key" \
    -out "$1/tls-cert" -days 1 -subj /CN=coordinator >/dev/null 2>&1
  cp "$1/tls-cert" "$1/client-ca"
  # The dashboard's own certificate (one the operators' browsers trust, in production).
  cp "$1/tls-cert" "$1/ui-tls-cert"
  cp "$1/tls-key" "$1/ui-tls-key"
  # The audit checkpoint key, as Nix makes one.
  nix-store --generate-binary-cache-key coordinator-audit-1 "$1/audit-key" "$1/audit-key.pub"
  chmod 600 "$1/audit-key"
  # The fleet CA, as `nixfleet-coordinator ca init` makes it ($coordinator: the binary under test).
  "$coordinator" ca init --dir "$1/fleet-ca" >/dev/null
  cp "$1/fleet-ca/ca.crt" "$1/ca-cert"
  cp "$1/fleet-ca/ca.key" "$1/ca-key"
  chmod 600 "$1/ca-key"
}
