// Every branch of the deploy decision: wrong host, up to date, hold, unsigned, bad or untrusted
// signature, quarantined, retry after attempt raised, deploy.
#include "nixfleet/agent/core/decide.hpp"

#include <boost/test/unit_test.hpp>

using namespace nixfleet;
using namespace nixfleet::agent::core;
using protocol::report_kind;

namespace {

const std::string running = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01-a";
const std::string target = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-b";

struct fixture {
  fixture() : key(protocol::generate_secret_key("ops-1")) {
    keys.add(protocol::to_public_key(key));
    desired.machine_id = "web-01";
    desired.release_id = "r-1";
    desired.store_path = target;
    desired.release_created_at = protocol::parse_time("2026-11-25T18:00:00Z").value();
    desired.entry_signature = sign_for("web-01");
    facts.machine_id = "web-01";
    facts.current_path = running;
    facts.keys = &keys;
    facts.quarantine = &quarantine;
  }
  std::string sign_for(const std::string& host) const {
    return protocol::sign_entry(key, desired.release_id, host, desired.store_path, desired.release_created_at);
  }

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

BOOST_AUTO_TEST_CASE(unsigned_entry_is_rejected_when_keys_are_configured) {
  desired.entry_signature.reset();
  BOOST_TEST((decide(desired, facts).what == verdict::unsigned_target));
  // Without trusted keys the agent does not ask for signatures.
  protocol::trusted_keys none;
  facts.keys = &none;
  BOOST_TEST((decide(desired, facts).what == verdict::deploy));
}

BOOST_AUTO_TEST_CASE(signature_for_another_host_is_rejected) {
  desired.entry_signature = sign_for("web-02");  // a valid signature, but of web-02's entry
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::bad_signature));
  BOOST_TEST(d.message.find("does not match") != std::string::npos, d.message);
}

BOOST_AUTO_TEST_CASE(tampered_fields_break_the_signature) {
  desired.store_path = running == target ? target : "/nix/store/7sw2ak7ijwbm5pjfzkvxnslbr7d2a9a3-evil";
  BOOST_TEST((decide(desired, facts).what == verdict::bad_signature));
}

BOOST_AUTO_TEST_CASE(unknown_or_rotated_out_key_is_rejected) {
  auto stranger = protocol::generate_secret_key("intruder-1");
  desired.entry_signature = protocol::sign_entry(stranger, desired.release_id, "web-01", desired.store_path,
                                                 desired.release_created_at);
  auto d = decide(desired, facts);
  BOOST_TEST((d.what == verdict::bad_signature));
  BOOST_TEST(d.message.find("untrusted key") != std::string::npos, d.message);

  // Same key name, different key material (a key the operator rotated away).
  auto old = protocol::generate_secret_key("ops-1");
  desired.entry_signature =
      protocol::sign_entry(old, desired.release_id, "web-01", desired.store_path, desired.release_created_at);
  BOOST_TEST((decide(desired, facts).what == verdict::bad_signature));
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
