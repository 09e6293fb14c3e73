// The outbox: order, acknowledgement, bounds (periodic reports give way first), and at-least-once
// delivery across coordinator outages and agent restarts.
#include "nixfleet/agent/core/outbox.hpp"
#include "nixfleet/agent/io/state_store.hpp"
#include "run_sync.hpp"

#include <boost/test/unit_test.hpp>

#include <map>

using namespace nixfleet;
using namespace nixfleet::agent;
using protocol::report_kind;
namespace fs = std::filesystem;

namespace {

const std::string path_a = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01-a";

protocol::report make(report_kind k, std::string msg = {}) {
  protocol::report r;
  r.at = protocol::parse_time("2026-11-25T18:00:00Z").value();
  r.kind = k;
  if (k != report_kind::heartbeat && k != report_kind::health && k != report_kind::up_to_date) r.store_path = path_a;
  if (k == report_kind::health) r.health = protocol::health_report{true, {}};
  if (!msg.empty()) r.message = msg;
  r.current_path = path_a;
  r.agent_version = "0.1.0";
  return r;
}

// A coordinator that may be down; keeps what it acknowledged, by seq (replays are idempotent).
struct fake_coordinator {
  bool up = true;
  std::map<std::uint64_t, protocol::report> received;
  std::optional<std::uint64_t> deliver(const std::vector<protocol::report>& batch) {
    if (!up || batch.empty()) return std::nullopt;
    for (const auto& r : batch) received.emplace(r.seq, r);
    return batch.back().seq;
  }
};

void flush(core::outbox& box, fake_coordinator& c) {
  while (!box.empty()) {
    auto acked = c.deliver(box.batch(50));
    if (!acked) return;
    box.ack(*acked);
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(outbox_tests)

BOOST_AUTO_TEST_CASE(sequence_numbers_increase_and_ack_removes_a_prefix) {
  core::outbox box;
  BOOST_TEST(box.push(make(report_kind::fetching)) == 1u);
  BOOST_TEST(box.push(make(report_kind::fetched)) == 2u);
  BOOST_TEST(box.push(make(report_kind::activating)) == 3u);
  BOOST_TEST(box.batch(2).size() == 2u);
  box.ack(2);
  BOOST_REQUIRE(box.size() == 1u);
  BOOST_TEST((box.items().front().kind == report_kind::activating));
  box.ack(2);  // a replayed ack changes nothing
  BOOST_TEST(box.size() == 1u);
}

BOOST_AUTO_TEST_CASE(periodic_reports_do_not_pile_up) {
  core::outbox box;
  for (int i = 0; i < 1000; ++i) {
    box.push(make(report_kind::heartbeat));
    box.push(make(report_kind::health));
  }
  BOOST_TEST(box.size() == 2u);  // the newest of each
  BOOST_TEST(box.items().back().seq == 2000u);
}

BOOST_AUTO_TEST_CASE(bound_drops_periodic_before_lifecycle_then_the_oldest) {
  core::outbox box(100);
  box.push(make(report_kind::heartbeat));
  for (int i = 0; i < 100; ++i) box.push(make(report_kind::activated, std::to_string(i)));
  BOOST_TEST(box.size() == 100u);
  for (const auto& r : box.items()) BOOST_TEST_REQUIRE((r.kind == report_kind::activated));  // the heartbeat went
  box.push(make(report_kind::confirmed));
  BOOST_TEST(box.size() == 100u);
  BOOST_TEST(*box.items().front().message == "1");  // then the oldest lifecycle report
  BOOST_TEST(box.dropped() == 2u);
}

BOOST_AUTO_TEST_CASE(nothing_is_lost_across_outages_and_restarts) {
  const auto dir = fs::temp_directory_path() / ("nixfleet-outbox-" + std::to_string(::getpid()));
  io::state_store store(dir);
  BOOST_REQUIRE(!store.prepare());
  fake_coordinator coord;
  core::outbox box;
  std::vector<std::string> sent;
  auto emit = [&](report_kind k) {
    const auto msg = "event-" + std::to_string(sent.size());
    sent.push_back(msg);
    box.push(make(k, msg));
    BOOST_REQUIRE(!test::run_sync(store.save_outbox(box)));
  };

  emit(report_kind::fetching);
  flush(box, coord);
  coord.up = false;  // the coordinator goes away
  emit(report_kind::fetched);
  emit(report_kind::activating);
  flush(box, coord);
  BOOST_TEST(box.size() == 2u);

  // The agent restarts during the outage: the pending reports come back from disk.
  auto reloaded = store.load_outbox(10000);
  BOOST_TEST(!reloaded.problem.has_value());
  box = std::move(reloaded.value);
  BOOST_TEST(box.size() == 2u);
  emit(report_kind::activated);
  BOOST_TEST(box.items().back().seq == 4u);  // numbering continues, no reuse

  coord.up = true;
  flush(box, coord);
  BOOST_TEST(box.empty());
  BOOST_REQUIRE(coord.received.size() == sent.size());
  std::size_t i = 0;
  for (const auto& [seq, r] : coord.received) {
    BOOST_TEST(seq == i + 1);  // in order, no gaps, no duplicates
    BOOST_TEST(*r.message == sent[i]);
    ++i;
  }

  // A crash between delivery and the durable ack replays the batch: at-least-once; the
  // coordinator's (machine, seq) identity makes the replay harmless.
  emit(report_kind::confirmed);
  auto before_ack = store.load_outbox(10000).value;
  flush(box, coord);
  BOOST_TEST(before_ack.size() == 1u);
  flush(before_ack, coord);
  BOOST_TEST(coord.received.size() == sent.size());
  std::error_code ec;
  fs::remove_all(dir, ec);
}

BOOST_AUTO_TEST_CASE(forensics_are_kept_on_the_newest_failures_and_a_batch_carries_a_few) {
  core::outbox box(1000);
  auto failure = [](std::uint32_t n) {
    protocol::report r;
    r.kind = protocol::report_kind::rolled_back;
    r.store_path = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01-a";
    r.message = "health gate failed " + std::to_string(n);
    r.forensics = protocol::forensics_bundle{};
    r.forensics->journal = std::string(16 * 1024, 'j');
    return r;
  };
  for (std::uint32_t i = 0; i < 12; ++i) box.push(failure(i));
  std::size_t kept = 0;
  for (const auto& r : box.items()) kept += r.forensics.has_value();
  BOOST_TEST(kept == core::outbox::max_forensics);
  // The oldest lost theirs and say so; the newest kept theirs.
  BOOST_TEST(!box.items().front().forensics.has_value());
  BOOST_TEST(box.items().front().message->find("forensics dropped") != std::string::npos);
  BOOST_TEST(box.items().back().forensics.has_value());
  BOOST_TEST(box.items().back().message.value() == "health gate failed 11");
  // A batch stops before the fifth bundle; one with no room left still carries its first report.
  const auto first = box.batch(100);
  std::size_t carried = 0;
  for (const auto& r : first) carried += r.forensics.has_value();
  BOOST_TEST(carried == core::outbox::forensics_per_batch);
  BOOST_TEST(first.size() == 4u + core::outbox::forensics_per_batch);  // four without, then four with
  box.ack(first.back().seq);
  BOOST_TEST(box.batch(1).size() == 1u);
  BOOST_TEST(box.batch(100).size() == core::outbox::forensics_per_batch);
}

BOOST_AUTO_TEST_SUITE_END()
