# NixOS module: services.nixfleet-agent. `settings` mirrors /etc/nixfleet/agent.json key for key
# and `health` mirrors /etc/nixfleet/health.json (gate and typed probes); agent/render.nix turns
# them into the files, which `nixfleet-agent check-config` accepts (checked in CI).
{ config, lib, pkgs, options, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf types;
  cfg = config.services.nixfleet-agent;
  stateDir = if cfg.settings.state_dir != null then cfg.settings.state_dir else "/var/lib/nixfleet-agent";
  rendered = import ./render.nix {
    settings = cfg.settings;
    health = cfg.health;
    healthConfigPath = "/etc/nixfleet/health.json";
  };
  nullable = type: description: mkOption { type = types.nullOr type; default = null; inherit description; };
  seconds = description: nullable types.number "${description} (seconds; null: the agent's default)";

  probeOptions = {
    options = {
      name = mkOption { type = types.str; description = "Unique probe name."; };
      type = mkOption {
        type = types.enum [ "systemd_unit" "systemd_failed" "http" "tcp" "exec" "plugin" ];
        description = "Probe type.";
      };
      required = nullable types.bool "A failing required probe fails the gate (default true).";
      timeout_s = seconds "Time one check may take";
      unit = nullable types.str "systemd_unit: the unit that must be active.";
      max_failed = nullable types.ints.unsigned "systemd_failed: failed units tolerated.";
      url = nullable types.str "http: URL to fetch.";
      expect_status = nullable (types.listOf types.int) "http: accepted status codes.";
      body_contains = nullable types.str "http: text the body must contain.";
      ca_file = nullable types.path "http: CA to verify https with.";
      host = nullable types.str "tcp: host to connect to.";
      port = nullable types.port "tcp: port to connect to.";
      command = nullable types.str "exec: program (or shell command with shell = true).";
      args = nullable (types.listOf types.str) "exec: arguments.";
      shell = nullable types.bool "exec: run command with /bin/sh -c.";
      json_output = nullable types.bool "exec: stdout is {\"status\": …, \"message\": …}.";
      max_output_bytes = nullable types.ints.unsigned "exec: output kept.";
      path = nullable types.str "plugin: shared object implementing health/sdk/nixfleet_probe.h.";
      config = nullable (types.attrsOf types.anything) "plugin: its JSON configuration.";
    };
  };
in
{
  options.services.nixfleet-agent = {
    enable = mkEnableOption "the nixfleet agent (pulls, verifies, activates, health-gates and rolls back this host)";

    persistence = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/persist";
      description = ''
        With an ephemeral root (impermanence): the persistent storage path under which the agent's
        state directory (in-flight record, anti-downgrade state, outbox) is declared, so that crash
        recovery after a reboot still finds it. Needs impermanence's NixOS module.
      '';
    };

    package = mkOption {
      type = types.package;
      # Built with the host's own pkgs: the module never touches nixpkgs.* (read-only pkgs work).
      default = pkgs.callPackage ../nix/package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "Package providing nixfleet-agent and nixfleet-probe-host.";
    };

    settings = mkOption {
      description = "The agent's configuration (agent.json), key for key; null leaves the agent's default.";
      default = { };
      type = types.submodule {
        options = {
          machine_id = mkOption {
            type = types.str;
            default = config.networking.hostName;
            defaultText = lib.literalExpression "config.networking.hostName";
            description = "This host's machine id.";
          };
          coordinator_url = mkOption { type = types.str; description = "https://… of the coordinator."; };
          allow_insecure_http = nullable types.bool "Allow an http:// coordinator (tests only).";
          tls = mkOption {
            default = null;
            description = "CA and client certificate (CN = machine_id).";
            type = types.nullOr (types.submodule {
              options = {
                ca_file = nullable types.str "CA to verify the coordinator.";
                cert_file = nullable types.str "Client certificate.";
                key_file = nullable types.str "Client certificate key, a path outside the store (never in /nix/store).";
              };
            });
          };
          enroll_token_file = nullable types.str
            ("A one-time token from `nixfleet machines enroll` (a path outside the store): the agent makes its own key "
             + "in state_dir, enrolls with the fleet CA and renews its certificate. Excludes tls.cert_file.");
          poll_interval_s = seconds "Poll interval";
          retry_interval_s = seconds "Longest back-off after failures";
          startup_jitter_s = seconds "Random delay before the first poll";
          long_poll = nullable types.bool
            "Long-poll a coordinator that offers it (a deployment reaches the host at once, over one kept connection); on by default.";
          reconnect_jitter_s = seconds "Spread of the first poll after a held long poll was lost (a coordinator restart)";
          request_timeout_s = seconds "Coordinator request timeout";
          health_interval_s = seconds "Periodic health report interval";
          state_dir = nullable types.str "Durable state directory.";
          profile = nullable types.str "System profile.";
          trusted_keys = nullable
            (types.listOf (types.either types.str (types.submodule {
              options = {
                key = mkOption { type = types.str; description = "Operator public key (Nix format)."; };
                not_after = nullable types.str "RFC 3339 UTC time after which signatures by this key are refused.";
              };
            })))
            "Operator keys (Nix format, or {key, not_after}) whose signatures the agent accepts. Required unless allow_unsigned.";
          allow_unsigned = nullable types.bool "Deploy unsigned targets when no trusted_keys are given (tests only; warns).";
          max_target_age_s = seconds "Refuse to newly activate releases signed longer ago than this (off by default)";
          caches = nullable (types.listOf types.str) "This host's own binary caches, tried before a release's; the only place for store parameters and file/ssh caches.";
          cache_public_keys = nullable (types.listOf types.str) "Binary cache keys for require-sigs.";
          fetch_timeout_s = seconds "Closure fetch timeout";
          min_free_mb = nullable types.ints.unsigned "Free space needed before fetching (MiB).";
          activation_timeout_s = seconds "switch-to-configuration timeout";
          switch_runner = nullable (types.enum [ "auto" "systemd-run" "direct" ]) "How to run the switch.";
          dry_run = nullable types.bool "Verify and fetch, never activate.";
          control_socket = nullable types.str "Break-glass control socket.";
          metrics_listen = nullable types.str "IP:port for Prometheus metrics.";
          outbox_limit = nullable types.ints.positive "Pending reports kept while the coordinator is away.";
          forensics = nullable (types.submodule {
            options = {
              enable = nullable types.bool "Attach failed units, their journal and the closure difference to a failed target's report.";
              journal = nullable types.bool "Send the journal of the failed units and of those the switch touched.";
              journal_lines = nullable types.ints.positive "Journal lines sent, newest, in all (200).";
              journal_exclude = nullable (types.listOf types.str) "Units (globs) whose journal never leaves the host.";
              timeout_s = seconds "Each forensics command's timeout";
            };
          }) "What a failed target's report carries besides the probes' last word.";
          log_level = nullable (types.enum [ "trace" "debug" "info" "warn" "error" ]) "Log level.";
        };
      };
    };

    health = {
      gate = mkOption {
        default = { };
        description = "The health gate after each activation.";
        type = types.submodule {
          options = {
            grace_s = seconds "No checks this long after activation";
            interval_s = seconds "Time between probe rounds";
            soak_s = seconds "Time the probes must keep passing";
            failure_threshold = nullable types.ints.positive "Failed rounds in a row that fail the gate.";
            success_threshold = nullable types.ints.positive "Passed rounds needed at the end.";
            timeout_s = seconds "No verdict by then is a failure";
          };
        };
      };
      probes = mkOption {
        type = types.listOf (types.submodule probeOptions);
        default = [ ];
        description = "Health probes (health.json).";
      };
    };
  };

  config = lib.mkMerge [ (mkIf cfg.enable {
    assertions = rendered.assertions ++ [{
      assertion = cfg.persistence == null || options.environment ? persistence;
      message = "services.nixfleet-agent.persistence is set but impermanence's NixOS module is not imported";
    }];
    warnings = rendered.warnings;
    environment.etc."nixfleet/agent.json".text = builtins.toJSON rendered.agent;
    environment.etc."nixfleet/health.json".text = builtins.toJSON rendered.health;
    environment.systemPackages = [ cfg.package ];

    systemd.services.nixfleet-agent = {
      description = "nixfleet agent";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "nix-daemon.service" ];
      # The agent runs switch-to-configuration itself: its own activation must not restart or stop
      # it in the middle of that switch. A new agent is picked up at the next boot or by hand.
      restartIfChanged = false;
      stopIfChanged = false;
      path = [ config.nix.package config.systemd.package ];
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${cfg.package}/bin/nixfleet-agent run --config /etc/nixfleet/agent.json";
        Restart = "always";
        RestartSec = 5;
        WatchdogSec = "120s";
        # Only the agent itself is stopped: a switch it started runs in its own transient unit.
        KillMode = "process";
        TimeoutStopSec = "30s";
        StateDirectory = "nixfleet-agent";
        StateDirectoryMode = "0700";
        RuntimeDirectory = "nixfleet-agent";
        RuntimeDirectoryMode = "0700";
        # Root and no filesystem sandboxing: it sets the system profile and switches the system.
      };
    };
  }) (lib.optionalAttrs (options.environment ? persistence) {
    environment.persistence = mkIf (cfg.enable && cfg.persistence != null) {
      ${cfg.persistence}.directories = [{ directory = stateDir; mode = "0700"; }];
    };
  }) ];
}
