// Every branch of the deploy decision against a coordinator that may lie: wrong host, up to date,
// hold, unsigned, each tampered signed field, v1 signatures, untrusted, expired and revoked keys,
// revoked releases and paths, replayed older targets, rollback statements, freshness, quarantine.
#include "nixfleet/agent/core/decide.hpp"

#include <boost/test/unit_test.hpp>

#include <functional>

using namespace nixfleet;
using namespace nixfleet::agent::core;
using protocol::report_kind;
using namespace std::chrono_literals;

namespace {

const std::string running = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01-a";
const std::string target = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-b";
const std::string older = "/nix/store/2m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-old";

protocol::timestamp at(const char* t) { return protocol::parse_time(t).value(); }

struct fixture {
  fixture() : key(protocol::generate_secret_key("ops-1")) {
    keys.add(protocol::to_public_key(key));
    desired.machine_id = "web-01";
    desired.release_id = "r-5";
    desired.store_path = target;
    desired.cache_urls = {"https://cache.example.org"};
    desired.release_created_at = at("2026-11-25T18:00:00Z");
    desired.release_sequence = 5;
    sign();
    facts.machine_id = "web-01";
    facts.current_path = running;
    facts.trust.keys = &keys;
    facts.now = at("2026-11-25T19:00:00Z");
    facts.quarantine = &quarantine;
  }
  void sign(const protocol::secret_key& k, const std::string& host) {
    auto st = protocol::entry_statement_of(desired);
    st.hostname = host;
    desired.entry_signature = protocol::sign_entry(k, st);
  }
  void sign() { sign(key, "web-01"); }
  // The host accepted release #7 (created 18:30) and ran `running` before it... now it runs `running`.
  void accepted_seven() { facts.accepted = high_water{7, at("2026-11-25T18:30:00Z"), "r-7"}; }
  protocol::rollback_statement statement(const protocol::secret_key& k, std::string host, protocol::timestamp issued,
                                         protocol::timestamp expires) {
    protocol::rollback_statement st{std::move(host), desired.store_path, issued, expires, "kernel regression", {}};
    protocol::sign_rollback(k, st);
    return st;
  }
  verdict what() { return decide(desired, facts).what; }

  protocol::secret_key key;
  protocol::trusted_keys keys;
  std::vector<quarantine_entry> quarantine;
  protocol::desired_state desired;
  host_facts facts;
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(deploy_decision, fixture)

BOOST_AUTO_TEST_CASE(signed_new_target_is_deployed) {
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::deploy));
  BOOST_TEST(!d.report.has_value());
  accepted_seven();
  desired.release_sequence = 8;  // newer than what was accepted
  sign();
  BOOST_TEST((what() == verdict::deploy));
}

BOOST_AUTO_TEST_CASE(running_target_is_up_to_date) {
  facts.current_path = target;
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::up_to_date));
  BOOST_TEST((*d.report == report_kind::up_to_date));
}

BOOST_AUTO_TEST_CASE(state_for_another_host_is_rejected) {
  desired.machine_id = "web-02";
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::wrong_host));
  BOOST_TEST((*d.report == report_kind::rejected));
}

BOOST_AUTO_TEST_CASE(unknown_running_system_is_never_replaced) {
  facts.current_path = "";
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::unknown_running));
  BOOST_TEST((*d.report == report_kind::rejected));
}

BOOST_AUTO_TEST_CASE(hold_blocks_deployment) {
  facts.on_hold = true;
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::on_hold));
  BOOST_TEST(d.message.find("hold") != std::string::npos);
  BOOST_TEST((d.report == protocol::report_kind::heartbeat), "deferred, not refused: a rollout waits for it");
}

BOOST_AUTO_TEST_CASE(unsigned_entry_is_rejected) {
  desired.entry_signature.reset();
  BOOST_TEST((what() == verdict::unsigned_target));
}

BOOST_AUTO_TEST_CASE(without_keys_nothing_deploys_unless_unsigned_is_allowed_explicitly) {
  protocol::trusted_keys none;
  facts.trust.keys = &none;
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::unsigned_target));
  BOOST_TEST(d.message.find("no trusted_keys") != std::string::npos, d.message);
  facts.trust.keys = nullptr;
  BOOST_TEST((what() == verdict::unsigned_target));
  facts.trust.allow_unsigned = true;
  desired.entry_signature.reset();
  BOOST_TEST((what() == verdict::deploy));
}

BOOST_AUTO_TEST_CASE(signature_for_another_host_is_rejected) {
  sign(key, "web-02");  // a valid signature, but of web-02's entry
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::bad_signature));
  BOOST_TEST(d.message.find("does not match") != std::string::npos, d.message);
}

BOOST_AUTO_TEST_CASE(each_tampered_signed_field_breaks_the_signature) {
  const auto genuine = desired;
  std::vector<std::pair<std::string, std::function<void(protocol::desired_state&)>>> tampers = {
      {"activation swapped to boot", [](auto& d) { d.activation = protocol::activation_mode::boot; }},
      {"activation swapped to test", [](auto& d) { d.activation = protocol::activation_mode::test; }},
      {"a cache swapped", [](auto& d) { d.cache_urls = {"https://evil.example.org"}; }},
      {"a cache added", [](auto& d) { d.cache_urls.push_back("http://127.0.0.1:9999"); }},
      {"caches dropped", [](auto& d) { d.cache_urls.clear(); }},
      {"sequence raised", [](auto& d) { d.release_sequence = 99; }},
      {"path swapped", [](auto& d) { d.store_path = "/nix/store/7sw2ak7ijwbm5pjfzkvxnslbr7d2a9a3-evil"; }},
      {"time moved", [](auto& d) { d.release_created_at += 1ms; }},
      {"release renamed", [](auto& d) { d.release_id = "r-6"; }},
  };
  for (const auto& [name, tamper] : tampers) {
    desired = genuine;
    tamper(desired);
    auto d = decide(desired, facts);
    BOOST_TEST((d.what == verdict::bad_signature), name);
    BOOST_TEST((*d.report == report_kind::rejected), name);
  }
  // The hostname is covered too: a state re-addressed to this host with web-02's signed entry.
  desired = genuine;
  desired.machine_id = "web-02";
  sign(key, "web-02");
  desired.machine_id = "web-01";
  BOOST_TEST((what() == verdict::bad_signature));
}

BOOST_AUTO_TEST_CASE(v1_signatures_are_refused_with_a_migration_hint) {
  desired.entry_signature =
      protocol::sign(key, protocol::entry_signing_payload_v1(desired.release_id, "web-01", desired.store_path,
                                                             desired.release_created_at))
          .to_string();
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::bad_signature));
  BOOST_TEST(d.message.find("v1 signature") != std::string::npos, d.message);
}

BOOST_AUTO_TEST_CASE(unknown_or_rotated_out_key_is_rejected) {
  auto stranger = protocol::generate_secret_key("intruder-1");
  sign(stranger, "web-01");
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::bad_signature));
  BOOST_TEST(d.message.find("untrusted key") != std::string::npos, d.message);

  // Same key name, different key material (a key the operator rotated away).
  auto old = protocol::generate_secret_key("ops-1");
  sign(old, "web-01");
  BOOST_TEST((what() == verdict::bad_signature));
}

BOOST_AUTO_TEST_CASE(a_key_past_its_not_after_is_refused) {
  protocol::trusted_keys expiring;
  expiring.add(protocol::to_public_key(key), at("2026-11-25T18:59:59Z"));
  facts.trust.keys = &expiring;
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::bad_signature));
  BOOST_TEST(d.message.find("not_after") != std::string::npos, d.message);
  facts.now = at("2026-11-25T18:59:00Z");
  BOOST_TEST((what() == verdict::deploy));
}

BOOST_AUTO_TEST_CASE(revoked_release_path_and_key_are_refused_though_signed) {
  protocol::revocation_list list{2, at("2026-11-25T18:10:00Z"), {"r-5"}, {}, {}, {}};
  facts.revocations = &list;
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::revoked));
  BOOST_TEST((*d.report == report_kind::rejected));
  BOOST_TEST(d.message.find("revocation list #2") != std::string::npos, d.message);

  list.releases.clear();
  list.store_paths = {target};
  BOOST_TEST((what() == verdict::revoked));

  list.store_paths.clear();
  list.keys = {"ops-1"};  // the operator withdrew the key that signed it
  d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::bad_signature));
  BOOST_TEST(d.message.find("withdrew") != std::string::npos, d.message);

  list.keys = {"ops-0"};
  BOOST_TEST((what() == verdict::deploy));
}

BOOST_AUTO_TEST_CASE(a_replayed_older_target_is_refused) {
  accepted_seven();
  desired.store_path = older;
  desired.release_sequence = 3;  // genuinely signed, two releases old
  desired.attempt = 9;           // a raised attempt changes nothing
  sign();
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::downgrade));
  BOOST_TEST((*d.report == report_kind::rejected));
  BOOST_TEST(d.message.find("older than release r-7 (#7)") != std::string::npos, d.message);
  // Equal to the high-water mark is not older (the same release again after a rollback).
  desired.release_sequence = 7;
  sign();
  BOOST_TEST((what() == verdict::deploy));
}

BOOST_AUTO_TEST_CASE(one_step_back_to_the_last_known_good_is_accepted) {
  accepted_seven();
  facts.step_back = older;
  desired.store_path = older;
  desired.release_sequence = 3;
  sign();
  BOOST_TEST((what() == verdict::deploy));
  // Any other older path is not.
  desired.store_path = "/nix/store/3m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-older";
  sign();
  BOOST_TEST((what() == verdict::downgrade));
}

BOOST_AUTO_TEST_CASE(an_older_target_with_a_valid_rollback_statement_is_accepted) {
  accepted_seven();
  desired.store_path = older;
  desired.release_sequence = 3;
  sign();
  desired.rollback = statement(key, "web-01", at("2026-11-25T18:45:00Z"), at("2026-11-25T19:45:00Z"));
  BOOST_TEST((what() == verdict::deploy));
  // The high-water mark it leaves: sequence kept, time moved to the statement, so it cannot be
  // replayed once used.
  auto hw = raised(facts.accepted, desired);
  BOOST_TEST(hw.sequence == 7u);
  BOOST_TEST((hw.at == at("2026-11-25T18:45:00Z")));
  facts.accepted = hw;
  BOOST_TEST((what() == verdict::downgrade));
}

BOOST_AUTO_TEST_CASE(older_target_with_a_bad_rollback_statement_is_refused) {
  accepted_seven();
  desired.store_path = older;
  desired.release_sequence = 3;
  sign();
  auto check = [&](protocol::rollback_statement st, const std::string& why) {
    desired.rollback = std::move(st);
    auto d = decide(desired, facts);
    BOOST_TEST((d.what == verdict::downgrade), why);
    BOOST_TEST(d.message.find(why) != std::string::npos, d.message);
  };
  check(statement(key, "web-01", at("2026-11-25T18:00:00Z"), at("2026-11-25T18:59:00Z")), "expired");
  check(statement(key, "web-02", at("2026-11-25T18:45:00Z"), at("2026-11-25T19:45:00Z")), "is for web-02");
  check(statement(protocol::generate_secret_key("intruder-1"), "web-01", at("2026-11-25T18:45:00Z"),
                  at("2026-11-25T19:45:00Z")),
        "signature is refused");
  check(statement(protocol::generate_secret_key("ops-1"), "web-01", at("2026-11-25T18:45:00Z"),
                  at("2026-11-25T19:45:00Z")),
        "signature is refused");
  // Issued before the release the host accepted: an old approval cannot undo a newer release.
  check(statement(key, "web-01", at("2026-11-25T18:20:00Z"), at("2026-11-25T19:45:00Z")), "not newer");
  // A statement for another path of this host.
  auto other = statement(key, "web-01", at("2026-11-25T18:45:00Z"), at("2026-11-25T19:45:00Z"));
  other.store_path = target;
  protocol::sign_rollback(key, other);
  check(other, "another store path");
  // Tampered after signing (a longer validity).
  auto stretched = statement(key, "web-01", at("2026-11-25T18:45:00Z"), at("2026-11-25T18:50:00Z"));
  stretched.expires_at = at("2026-11-26T00:00:00Z");
  check(stretched, "signature is refused");
}

BOOST_AUTO_TEST_CASE(freshness_window_refuses_stale_releases_but_not_the_step_back) {
  facts.trust.max_target_age = 30min;
  auto d = decide(desired, facts);  // signed 18:00, now 19:00
  BOOST_TEST((d.what == verdict::stale));
  BOOST_TEST(d.message.find("max_target_age_s") != std::string::npos, d.message);
  facts.trust.max_target_age = 2h;
  BOOST_TEST((what() == verdict::deploy));
  facts.trust.max_target_age = 30min;
  facts.step_back = target;  // going back to what ran before is never stale
  BOOST_TEST((what() == verdict::deploy));
}

BOOST_AUTO_TEST_CASE(a_boot_target_staged_once_is_not_applied_again) {
  desired.activation = protocol::activation_mode::boot;
  sign();
  BOOST_TEST((what() == verdict::deploy));
  facts.staged_boot = target;
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::staged));
  BOOST_TEST((*d.report == report_kind::heartbeat));
  // The same path asked for as a switch is applied.
  desired.activation = protocol::activation_mode::switch_;
  sign();
  BOOST_TEST((what() == verdict::deploy));
}

BOOST_AUTO_TEST_CASE(quarantined_target_is_refused_until_attempt_is_raised) {
  quarantine.push_back({target, 0, "probe api failed"});
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::quarantined));
  BOOST_TEST(d.message.find("probe api failed") != std::string::npos, d.message);
  // Every later poll of the same attempt is refused too: no re-apply loop.
  for (int poll = 0; poll < 100; ++poll) BOOST_TEST_REQUIRE((decide(desired, facts).what == verdict::quarantined));
  desired.attempt = 1;  // the operator asked for a retry
  BOOST_TEST((decide(desired, facts).what == verdict::deploy));
  // A quarantine at a later attempt covers earlier attempts too.
  quarantine.push_back({target, 3, "again"});
  desired.attempt = 2;
  BOOST_TEST((decide(desired, facts).what == verdict::quarantined));
}

BOOST_AUTO_TEST_CASE(quarantine_of_another_path_does_not_matter) {
  quarantine.push_back({"/nix/store/7sw2ak7ijwbm5pjfzkvxnslbr7d2a9a3-other", 5, "x"});
  BOOST_TEST((decide(desired, facts).what == verdict::deploy));
}

BOOST_AUTO_TEST_SUITE_END()
