# NixOS module: services.nixfleet-coordinator. `settings` mirrors `nixfleet-coordinator serve`'s
# flags one to one; coordinator/render.nix turns them into the command line, which
# `nixfleet-coordinator check-config` accepts (checked in CI). TLS files reach the service as
# systemd credentials, so the dynamic user never needs read access to them.
{ config, lib, pkgs, utils, options, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf types;
  cfg = config.services.nixfleet-coordinator;
  s = cfg.settings;
  # The credentials directory is systemd's `%d` specifier: rendered as a token that escaping leaves
  # alone, replaced after escaping (which doubles every `%` the settings themselves carry).
  credentialsToken = "@nixfleet-credentials-directory@";
  args = import ./render.nix { settings = s; credentialsDir = credentialsToken; };
  nullable = type: description: mkOption { type = types.nullOr type; default = null; inherit description; };
  credentials = lib.filter (x: x != null) [
    (if s.tls_cert != null then "tls-cert:${s.tls_cert}" else null)
    (if s.tls_key != null then "tls-key:${s.tls_key}" else null)
    (if s.client_ca != null then "client-ca:${s.client_ca}" else null)
    (if s.audit_key != null then "audit-key:${s.audit_key}" else null)
    (if s.ca_cert != null then "ca-cert:${s.ca_cert}" else null)
    (if s.ca_key != null then "ca-key:${s.ca_key}" else null)
    (if s.ui_tls_cert != null then "ui-tls-cert:${s.ui_tls_cert}" else null)
    (if s.ui_tls_key != null then "ui-tls-key:${s.ui_tls_key}" else null)
  ];
  keys = pkgs.writeShellScriptBin "nixfleet-coordinator-keys" ''
    # Runs `nixfleet-coordinator keys create` as the service's user, on its database.
    exec ${config.systemd.package}/bin/systemd-run --quiet --wait --pipe --collect \
      -p DynamicUser=yes -p User=nixfleet-coordinator -p StateDirectory=nixfleet-coordinator \
      ${cfg.package}/bin/nixfleet-coordinator keys create --db ${lib.escapeShellArg s.db} "$@"
  '';
in
{
  options.services.nixfleet-coordinator = {
    enable = mkEnableOption "the nixfleet coordinator";

    package = mkOption {
      type = types.package;
      # Built with the host's own pkgs: the module never touches nixpkgs.* (read-only pkgs work).
      default = pkgs.callPackage ../nix/package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "Package providing nixfleet-coordinator.";
    };

    persistence = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/persist";
      description = ''
        With an ephemeral root (impermanence): the persistent storage path under which the
        coordinator's state directory (its database) is declared. Needs impermanence's NixOS module.
      '';
    };

    openFirewall = mkOption { type = types.bool; default = false; description = "Open the API port."; };

    settings = mkOption {
      description = "`nixfleet-coordinator serve` flags, one option each; null leaves the default.";
      default = { };
      type = types.submodule {
        options = {
          db = mkOption {
            type = types.str;
            default = "/var/lib/nixfleet-coordinator/coordinator.db";
            description = "SQLite database.";
          };
          listen = mkOption { type = types.str; default = "[::]:8443"; description = "API address, HOST:PORT."; };
          # Strings, not paths: a path literal would copy the file (the private key!) into the store.
          tls_cert = nullable types.str "Server certificate chain (PEM), a path outside the store.";
          tls_key = nullable types.str "Server private key (PEM), a path outside the store (never in /nix/store).";
          client_ca = nullable types.str "CA whose client certificates identify agents.";
          require_client_cert = mkOption { type = types.bool; default = false; description = "Refuse clients without a certificate."; };
          insecure_http = mkOption { type = types.bool; default = false; description = "Serve plain HTTP (tests only)."; };
          metrics_listen = nullable types.str "Prometheus address, e.g. 127.0.0.1:9464.";
          report_retention_days = nullable types.ints.positive "Keep agent reports this long.";
          poll_hint = nullable types.ints.positive "Poll interval suggested during rollouts (s).";
          long_poll_max = nullable types.ints.unsigned
            "Longest a long poll is held until the host's desired state changes (s, default 300; 0: no long polls).";
          idle_timeout = nullable types.number "Seconds a connection may wait between requests.";
          request_timeout = nullable types.number "Seconds to receive one request.";
          max_connections = nullable types.ints.positive "Open connections at most (LimitNOFILE follows it).";
          threads = mkOption {
            type = types.either (types.ints.between 1 64) (types.enum [ "auto" ]);
            default = 1;
            description = ''
              Threads serving connections (TLS handshakes, parsing, writing; the fleet itself stays on one);
              auto: one per core of the host. More than one pays for itself when new TLS connections
              dominate and cores are free; each kept-alive request then costs more CPU (BENCHMARKS.md).
            '';
          };
          max_connections_per_ip = nullable types.ints.unsigned
            "Open connections from one source address at most (default 1024; 0 behind a NAT or load balancer).";
          audit_key = nullable types.str
            "ed25519 secret key (nix-store --generate-binary-cache-key) signing audit checkpoints; a path outside the store.";
          checkpoint_interval = nullable types.number "Seconds between audit checkpoints.";
          ca_cert = nullable types.str
            "The fleet CA's certificate (from `nixfleet-coordinator ca init`): hosts enroll with tokens and renew.";
          ca_key = nullable types.str "The fleet CA's private key, a path outside the store (never in /nix/store).";
          certificate_lifetime = nullable types.str "Lifetime of the certificates the fleet CA issues, e.g. \"30d\".";
          report_budget = nullable types.ints.unsigned "Reports one machine may send per 10 minutes (0: no limit).";
          report_budget_mb = nullable types.ints.unsigned "Report MiB one machine may send per 10 minutes (0: no limit).";
          report_retention_mb = nullable types.ints.positive "Stored reports at most, in MiB of bodies.";
          ui_listen = nullable types.str
            "The web dashboard's address, HOST:PORT (a listener of its own; TLS as the API's unless ui_tls_cert).";
          ui_tls_cert = nullable types.str "The dashboard's certificate chain (PEM), e.g. one the operators' browsers trust.";
          ui_tls_key = nullable types.str "The dashboard's private key (PEM), a path outside the store.";
          ui_session_ttl = nullable types.str "A dashboard session's life from sign-in, e.g. \"8h\".";
          ui_session_idle = nullable types.str "A dashboard session ends after this long without a request, e.g. \"1h\".";
          log_level = nullable (types.enum [ "trace" "debug" "info" "warn" "error" ]) "Log level.";
        };
      };
    };
  };

  config = lib.mkMerge [ (mkIf cfg.enable {
    assertions = import ./assertions.nix { settings = s; } ++ [{
      assertion = cfg.persistence == null || options.environment ? persistence;
      message = "services.nixfleet-coordinator.persistence is set but impermanence's NixOS module is not imported";
    }];
    environment.systemPackages = [ cfg.package keys ];
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall ([
      (lib.toInt (lib.last (lib.splitString ":" s.listen)))
    ] ++ lib.optional (s.ui_listen != null) (lib.toInt (lib.last (lib.splitString ":" s.ui_listen))));

    systemd.services.nixfleet-coordinator = {
      description = "nixfleet coordinator";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      serviceConfig = {
        Type = "notify";
        # systemd's own quoting: `%` and `$` in a value are doubled, not expanded.
        ExecStart = builtins.replaceStrings [ credentialsToken ] [ "%d" ]
          (utils.escapeSystemdExecArgs ([ "${cfg.package}/bin/nixfleet-coordinator" "serve" ] ++ args));
        Restart = "always";
        RestartSec = 2;
        TimeoutStopSec = "20s";
        DynamicUser = true;
        User = "nixfleet-coordinator";
        StateDirectory = "nixfleet-coordinator";
        StateDirectoryMode = "0700";
        LoadCredential = credentials;
        # Hardening: it only needs its state directory and the network.
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        NoNewPrivileges = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        # Asio may set up io_uring (file I/O); not every systemd counts it in @system-service.
        SystemCallFilter = [ "@system-service" "io_uring_setup" "io_uring_enter" "io_uring_register" "~@privileged" ];
        CapabilityBoundingSet = "";
        UMask = "0077";
        # Every connection is a descriptor; the coordinator refuses a --max-connections this limit
        # (less a reserve for the database and listeners) cannot hold.
        LimitNOFILE = (if s.max_connections == null then 20000 else s.max_connections) + 1024;
      };
    };
  }) (lib.optionalAttrs (options.environment ? persistence) {
    # DynamicUser: the state directory really lives under /var/lib/private.
    environment.persistence = mkIf (cfg.enable && cfg.persistence != null) {
      ${cfg.persistence}.directories = [{ directory = "/var/lib/private/nixfleet-coordinator"; mode = "0700"; }];
    };
  }) ];
}
