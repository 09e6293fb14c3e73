// Every `nixfleet` command wired up with CLI11: options, subcommands, settings precedence and
// the documented exit codes. The commands themselves are in releases.cpp, rollouts.cpp and
// fleet.cpp.
#include "nixfleet/cli/commands.hpp"

#include "commands_detail.hpp"
#include "nixfleet/common/version.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

namespace nixfleet::cli {

using namespace detail;

int run(int argc, char** argv) {
  CLI::App app{"nixfleet — build, sign and register releases, roll them out in waves, watch the fleet, roll back"};
  app.set_version_flag("--version", std::string(nixfleet::version()));
  app.require_subcommand(1);
  context ctx;
  app.add_option("--coordinator", ctx.s.coordinator, "coordinator URL (env NIXFLEET_COORDINATOR)");
  app.add_option("--api-key", ctx.s.api_key, "API key nfk_… (env NIXFLEET_API_KEY; prefer --api-key-file)");
  app.add_option("--api-key-file", ctx.s.api_key_file, "file holding the API key, not world-readable (env NIXFLEET_API_KEY_FILE)");
  app.add_option("--ca-file", ctx.s.ca_file, "CA to verify the coordinator with (env NIXFLEET_CA_FILE)");
  app.add_option("--cert-file", ctx.s.cert_file, "client certificate, when the coordinator requires one");
  app.add_option("--key-file", ctx.s.key_file, "client certificate key");
  app.add_flag("--json", ctx.s.json, "print JSON instead of tables");
  app.add_flag("--insecure-http", ctx.s.insecure_http,
               "allow a plain http:// coordinator that is not on loopback (the API key travels in the clear)");
  app.fallthrough();

  int rc = exit_ok;
  std::function<int()> action;

  // release
  auto* release = app.add_subcommand("release", "Build, sign, register and inspect releases");
  release->require_subcommand(1);
  release_create_opts rc_opts;
  auto* rcreate = release->add_subcommand("create", "Build every host of a flake (or take given paths), sign and register");
  rcreate->add_option("--flake", rc_opts.flake, "flake whose nixosConfigurations to build");
  rcreate->add_option("--hosts", rc_opts.hosts_globs, "only hosts matching these globs");
  rcreate->add_option("--entry", rc_opts.entries, "HOST=STORE_PATH built elsewhere (repeatable)");
  rcreate->add_option("--push-to", rc_opts.push_to, "sign the closures and nix copy them to this store URL");
  rcreate->add_option("--sign-key", rc_opts.sign_key, "Nix secret key file that signs every entry")->required();
  rcreate->add_option("--id", rc_opts.id, "release id (default r-<UTC date and time>-<6 random hex digits>)");
  rcreate->add_option("--cache-url", rc_opts.cache_urls, "binary caches agents fetch from (default: --push-to)");
  rcreate->add_option("--tag", rc_opts.tags, "tags for every entry");
  rcreate->add_option("--sequence", rc_opts.sequence, "the release's signed sequence (default: one above the newest)");
  rcreate->add_option("--activation", rc_opts.activation, "switch, boot or test (signed)")
      ->capture_default_str()
      ->check(CLI::IsMember({"switch", "boot", "test"}));
  rcreate->callback([&] { action = [&] { return release_create(ctx, rc_opts); }; });
  release->add_subcommand("list", "List releases")->callback([&] { action = [&] { return release_list(ctx); }; });
  std::string rel_id, rel_b;
  auto* rshow = release->add_subcommand("show", "Show one release");
  rshow->add_option("ID", rel_id, "release id")->required();
  rshow->callback([&] { action = [&] { return release_show(ctx, rel_id); }; });
  bool closure = false;
  auto* rdiff = release->add_subcommand("diff", "What changes between two releases");
  rdiff->add_option("A", rel_id, "from release")->required();
  rdiff->add_option("B", rel_b, "to release")->required();
  rdiff->add_flag("--closure", closure, "add nix store diff-closures per changed host (paths must be local)");
  rdiff->callback([&] { action = [&] { return release_diff(ctx, rel_id, rel_b, closure); }; });
  release_revoke_opts rv;
  auto* rrevoke = release->add_subcommand("revoke", "Sign and publish a revocation list that adds these releases, paths or keys");
  rrevoke->add_option("ID", rv.releases, "release ids to revoke");
  rrevoke->add_option("--path", rv.paths, "store paths to revoke (repeatable)");
  rrevoke->add_option("--key", rv.keys, "operator key names whose signatures agents must refuse (repeatable)");
  rrevoke->add_option("--sign-key", rv.sign_key, "Nix secret key file that signs the list")->required();
  rrevoke->add_option("--trusted-key", rv.trusted_keys, "public key that may have signed the current list (repeatable)");
  rrevoke->callback([&] { action = [&] { return release_revoke(ctx, rv); }; });
  auto* rdelete = release->add_subcommand("delete", "Delete a release no rollout references (admin)");
  rdelete->add_option("ID", rel_id, "release id")->required();
  rdelete->callback([&] { action = [&] { return release_delete(ctx, rel_id); }; });

  // deploy
  deploy_opts d_opts;
  auto* dep = app.add_subcommand("deploy", "Roll a release out in waves");
  dep->add_option("--release", d_opts.release, "release id")->required();
  dep->add_option("--tags", d_opts.tags, "hosts with any of these tags");
  dep->add_option("--hosts", d_opts.hosts, "hosts matching these globs");
  dep->add_option("--waves", d_opts.waves, "cumulative wave sizes, or canary")->capture_default_str();
  dep->add_option("--soak", d_opts.soak, "seconds a wave soaks before the next")->capture_default_str();
  dep->add_option("--failure-threshold", d_opts.threshold, "failures tolerated per wave: N or P%")->capture_default_str();
  dep->add_option("--health-timeout", d_opts.health_timeout, "seconds a host has to confirm")->capture_default_str();
  dep->add_option("--on-failure", d_opts.on_failure, "pause, revert or halt")
      ->capture_default_str()
      ->check(CLI::IsMember({"pause", "revert", "halt"}));
  dep->add_flag("--wait", d_opts.wait, "follow the rollout until it ends (exit 3 unless it completes)");
  dep->callback([&] { action = [&] { return deploy(ctx, d_opts); }; });

  // rollout
  auto* rollout = app.add_subcommand("rollout", "List, follow and steer rollouts");
  rollout->require_subcommand(1);
  std::optional<std::string> ro_status;
  std::string ro_id;
  bool retry_failed = false;
  auto* rlist = rollout->add_subcommand("list", "List rollouts");
  rlist->add_option("--status", ro_status, "running, paused, completed, cancelled, halted, reverted");
  rlist->callback([&] { action = [&] { return rollout_list(ctx, ro_status); }; });
  auto* rstatus = rollout->add_subcommand("status", "Waves and hosts of a rollout");
  rstatus->add_option("ID", ro_id, "rollout id")->required();
  rstatus->callback([&] { action = [&] { return rollout_status(ctx, ro_id); }; });
  auto* rwatch = rollout->add_subcommand("watch", "Follow a rollout until it ends (exit 3 unless it completes)");
  rwatch->add_option("ID", ro_id, "rollout id")->required();
  rwatch->callback([&] {
    action = [&] {
      require_id(ro_id, "rollout");
      auto api = ctx.api();
      return watch_rollout(ctx, api, ro_id);
    };
  });
  for (const char* verb : {"pause", "resume", "cancel"}) {
    auto* sub = rollout->add_subcommand(verb, std::string(verb) == "pause"    ? "Stop dispatching"
                                              : std::string(verb) == "resume" ? "Continue a paused rollout"
                                                                              : "End a rollout; hosts keep their desired state");
    sub->add_option("ID", ro_id, "rollout id")->required();
    if (std::string(verb) == "resume")
      sub->add_flag("--retry-failed", retry_failed, "dispatch failed hosts again with a raised attempt");
    std::string v = verb;
    sub->callback([&, v] { action = [&, v] { return rollout_command(ctx, ro_id, v, retry_failed); }; });
  }

  // status
  status_opts s_opts;
  auto* stat = app.add_subcommand("status", "One table of the fleet");
  stat->add_option("--tag", s_opts.tag, "only machines with this tag");
  stat->add_option("--state", s_opts.state, "only machines in this lifecycle state");
  stat->add_option("--stale-after", s_opts.stale_after, "seconds without a report before STALE")->capture_default_str();
  stat->callback([&] { action = [&] { return fleet_status(ctx, s_opts); }; });

  // machines
  auto* machines = app.add_subcommand("machines", "List, show and manage machines");
  machines->require_subcommand(1);
  std::string m_id, m_state;
  bool show_rollback = false;
  std::vector<std::string> m_tags;
  auto* mlist = machines->add_subcommand("list", "List machines");
  mlist->add_option("--tag", s_opts.tag, "only machines with this tag");
  mlist->add_option("--state", s_opts.state, "only machines in this lifecycle state");
  mlist->callback([&] { action = [&] { return fleet_status(ctx, s_opts); }; });
  auto* mshow = machines->add_subcommand("show", "Everything about one machine");
  mshow->add_option("ID", m_id, "machine id")->required();
  mshow->add_flag("--rollback", show_rollback,
                  "the newest rollback or failed activation instead, with what the host saw (probe output, failed "
                  "units, journal, switch output, closure difference)");
  mshow->callback([&] { action = [&] { return show_rollback ? machine_show_rollback(ctx, m_id) : machine_show(ctx, m_id); }; });
  auto* mtag = machines->add_subcommand("tag", "Set a machine's tags (admin)");
  mtag->add_option("ID", m_id, "machine id")->required();
  mtag->add_option("TAGS", m_tags, "the tags (none clears them)");
  mtag->callback([&] {
    action = [&] {
      for (const auto& t : m_tags)
        if (protocol::check_tag(t)) throw cli_error("not a valid tag: " + t, exit_usage);
      return machine_update(ctx, m_id, json::object{{"tags", strings(m_tags)}});
    };
  });
  auto* mlife = machines->add_subcommand("lifecycle", "Set a machine's lifecycle (admin)");
  mlife->add_option("ID", m_id, "machine id")->required();
  mlife->add_option("STATE", m_state, "active, maintenance or decommissioned")
      ->required()
      ->check(CLI::IsMember({"active", "maintenance", "decommissioned"}));
  mlife->callback([&] { action = [&] { return machine_update(ctx, m_id, json::object{{"lifecycle", m_state}}); }; });
  auto* mclear = machines->add_subcommand("clear-desired", "Remove a machine's desired state (admin)");
  mclear->add_option("ID", m_id, "machine id")->required();
  mclear->callback([&] { action = [&] { return machine_clear_desired(ctx, m_id); }; });
  std::string m_ttl = "1h";
  auto* menroll = machines->add_subcommand(
      "enroll", "Print a one-time token with which the host ID enrolls itself with the fleet CA (deploy)");
  menroll->add_option("ID", m_id, "machine id")->required();
  menroll->add_option("--tags", m_tags, "tags the machine gets when it enrolls")->delimiter(',');
  menroll->add_option("--ttl", m_ttl, "how long the token may be used (s, m, h or d; up to 7d)")->capture_default_str();
  menroll->callback([&] {
    action = [&] {
      for (const auto& t : m_tags)
        if (protocol::check_tag(t)) throw cli_error("not a valid tag: " + t, exit_usage);
      auto ttl = protocol::parse_duration(m_ttl);
      if (!ttl || ttl->count() < 60 || ttl->count() > 7 * 86400)
        throw cli_error("--ttl: a duration from 60s to 7d, e.g. 1h", exit_usage);
      return machine_enroll(ctx, m_id, m_tags, *ttl);
    };
  });
  auto* mrevoke = machines->add_subcommand(
      "revoke", "Cut a machine off: every certificate it has is refused from its next request (admin)");
  mrevoke->add_option("ID", m_id, "machine id")->required();
  mrevoke->callback([&] { action = [&] { return machine_revoke(ctx, m_id); }; });

  // rollback
  rollback_opts rb;
  auto* rback = app.add_subcommand("rollback", "Roll a host back: through the coordinator, or directly over ssh");
  rback->add_option("--host", rb.host, "machine id")->required();
  rback->add_option("--to", rb.to, "store path to go to (default: the previous confirmed generation)");
  rback->add_flag("--ssh", rb.ssh, "switch the host directly over ssh, then tell the coordinator");
  rback->add_option("--target", rb.target, "USER@HOST for ssh (default root@<host>)");
  rback->add_option("--profile", rb.profile, "system profile on the host")->capture_default_str();
  rback->add_option("--ssh-option", rb.ssh_options, "extra ssh -o options (repeatable)");
  rback->add_option("--sign-key", rb.sign_key, "sign a rollback statement for --to (needed further back than one step)");
  rback->add_option("--reason", rb.reason, "why, recorded in the statement")->capture_default_str();
  rback->add_option("--valid-for", rb.valid_for_s, "seconds the statement is valid")->capture_default_str();
  rback->callback([&] { action = [&] { return rollback(ctx, rb); }; });

  // audit
  audit_opts a;
  auto* aud = app.add_subcommand("audit", "Read, export and verify the audit log");
  aud->add_option("--actor", a.actor, "only this actor");
  aud->add_option("--action", a.action, "only this action");
  aud->add_option("--target", a.target, "only this target");
  aud->add_option("--since", a.since, "RFC 3339 UTC time");
  aud->add_option("--limit", a.limit, "rows at most (≤ 1000)")->capture_default_str()->check(CLI::Range(1u, 1000u));
  aud->add_option("--export", a.format, "print the whole log as csv or jsonl")->check(CLI::IsMember({"csv", "jsonl"}));
  aud->add_flag("--verify", a.verify, "check the hash chain (exit 1 when broken)");
  aud->add_option("--public-key", a.public_key,
                  "with --verify: the coordinator's audit public key (name:base64); the export is fetched and "
                  "every signed checkpoint checked here, not by the coordinator");
  aud->add_option("--file", a.file, "with --verify: a jsonl export to verify offline instead of the live log");
  aud->callback([&] { action = [&] { return audit(ctx, a); }; });

  // keys
  auto* keys = app.add_subcommand("keys", "Manage API keys (admin)");
  keys->require_subcommand(1);
  std::string k_name, k_role, k_id;
  auto* kcreate = keys->add_subcommand("create", "Create a key and print it once");
  kcreate->add_option("--name", k_name, "who or what it is for")->required();
  kcreate->add_option("--role", k_role, "readonly, deploy or admin")->required()->check(CLI::IsMember({"readonly", "deploy", "admin"}));
  kcreate->callback([&] { action = [&] { return keys_create(ctx, k_name, k_role); }; });
  keys->add_subcommand("list", "List keys")->callback([&] { action = [&] { return keys_list(ctx); }; });
  auto* krevoke = keys->add_subcommand("revoke", "Revoke a key");
  krevoke->add_option("ID", k_id, "key id")->required();
  krevoke->callback([&] { action = [&] { return keys_revoke(ctx, k_id); }; });

  // webhooks
  auto* hooks = app.add_subcommand("webhooks", "Send events to HTTP receivers, signed and retried (admin)");
  hooks->require_subcommand(1);
  webhook_opts w_opts;
  std::string w_id;
  std::uint32_t w_limit = 50;
  auto* hadd = hooks->add_subcommand("add", "Send these events to URL; prints the hook's id");
  hadd->add_option("URL", w_opts.url, "http(s) URL of the receiver")->required();
  hadd->add_option("--events", w_opts.events,
                   "comma-separated events or patterns: machine.rolled_back, rollout.paused, rollout.*, alert.*, *")
      ->required();
  hadd->add_option("--secret-file", w_opts.secret_file,
                   "file holding the shared secret (16+ characters, not world-readable): deliveries are signed with it");
  hadd->add_option("--description", w_opts.description, "what it is for");
  hadd->callback([&] { action = [&] { return webhooks_add(ctx, w_opts); }; });
  hooks->add_subcommand("list", "List hooks with their pending deliveries")->callback([&] {
    action = [&] { return webhooks_list(ctx); };
  });
  auto* hrm = hooks->add_subcommand("remove", "Remove a hook and its pending deliveries");
  hrm->add_option("ID", w_id, "hook id")->required();
  hrm->callback([&] { action = [&] { return webhooks_remove(ctx, w_id); }; });
  auto* hlog = hooks->add_subcommand("deliveries", "A hook's deliveries, newest first");
  hlog->add_option("ID", w_id, "hook id")->required();
  hlog->add_option("--limit", w_limit, "rows at most (≤ 1000)")->capture_default_str()->check(CLI::Range(1u, 1000u));
  hlog->callback([&] { action = [&] { return webhooks_deliveries(ctx, w_id, w_limit); }; });

  // completions
  std::string shell;
  auto* comp = app.add_subcommand("completions", "Print a completion script: bash, zsh or fish");
  comp->add_option("SHELL", shell, "bash, zsh or fish")->required()->check(CLI::IsMember({"bash", "zsh", "fish"}));
  comp->callback([&] { action = [&] { return std::cout << completion_script(app, shell), exit_ok; }; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    // `nixfleet bogus`: CLI11 only says a subcommand is required; name the word it did not know.
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr && msg.find("subcommand") != std::string::npos) {
      const CLI::App* at = &app;
      for (int i = 1; i < argc; ++i) {
        std::string w = argv[i];
        if (w.starts_with("-")) continue;
        const CLI::App* next = nullptr;
        for (const CLI::App* sub : at->get_subcommands([](const CLI::App*) { return true; }))
          if (sub->get_name() == w) next = sub;
        if (next == nullptr) {
          msg = "unknown command: " + w;
          break;
        }
        at = next;
      }
    }
    std::cerr << "nixfleet: " << msg << " (see --help)\n";
    return exit_usage;
  }
  if (!action) return exit_usage;
  try {
    rc = action();
  } catch (const cli_error& e) {
    std::cerr << "nixfleet: " << e.what() << "\n";
    return e.exit_code;
  } catch (const std::exception& e) {
    std::cerr << "nixfleet: " << e.what() << "\n";
    return exit_failure;
  }
  return rc;
}

}  // namespace nixfleet::cli
