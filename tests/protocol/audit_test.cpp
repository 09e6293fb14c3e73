// The audit chain's verifier: an intact log with signed checkpoints, and each way of faking one —
// a row rewritten and the chain recomputed, rows deleted and re-chained, the tail cut off, the
// checkpoints deleted, a checkpoint forged or signed by another key — named at the row.
#include "nixfleet/protocol/audit.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/time.hpp"

#include <boost/test/unit_test.hpp>

using namespace nixfleet::protocol;

namespace {

struct log_fixture {
  secret_key key = generate_secret_key("coordinator-audit-1");
  secret_key other = generate_secret_key("coordinator-audit-1");  // same name, another key
  std::vector<audit_event> rows;
  std::vector<audit_checkpoint> checkpoints;

  log_fixture() {
    for (int i = 0; i < 10; ++i) append("machine.updated", "web-" + std::to_string(i));
  }

  void append(const std::string& action, const std::string& target) {
    audit_event e;
    e.seq = rows.size() + 1;
    e.at = parse_time("2026-12-02T06:00:00Z").value() + std::chrono::seconds(e.seq);
    e.actor = "alice";
    e.action = action;
    e.target = target;
    e.prev_hash = rows.empty() ? std::string(64, '0') : rows.back().hash;
    e.hash = audit_row_hash(e);
    rows.push_back(e);
  }
  void checkpoint_at(std::size_t seq, const secret_key& by) {
    audit_checkpoint c{seq, rows.at(seq - 1).hash, rows.at(seq - 1).at, {}};
    sign_audit_checkpoint(by, c);
    checkpoints.push_back(c);
  }
  // What someone with the database file can do: recompute every hash from `from` on.
  void rechain() {
    for (std::size_t i = 0; i < rows.size(); ++i) {
      rows[i].seq = i + 1;
      rows[i].prev_hash = i == 0 ? std::string(64, '0') : rows[i - 1].hash;
      rows[i].hash = audit_row_hash(rows[i]);
    }
  }
  audit_verification verify(std::optional<public_key> k) const {
    audit_verifier v(std::move(k));
    for (const auto& c : checkpoints) v.expect(c);
    for (const auto& r : rows) v.add(r);
    return v.finish();
  }
  // As the coordinator writes it: each checkpoint after its row, those past the last row at the end.
  std::string export_text() const {
    std::string out;
    for (const auto& r : rows) {
      out += serialize(r) + "\n";
      for (const auto& c : checkpoints)
        if (c.seq == r.seq) out += audit_checkpoint_line(c) + "\n";
    }
    for (const auto& c : checkpoints)
      if (rows.empty() || c.seq > rows.back().seq) out += audit_checkpoint_line(c) + "\n";
    return out;
  }
  public_key pub() const { return to_public_key(key); }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(audit_chain, log_fixture)

BOOST_AUTO_TEST_CASE(an_intact_log_with_checkpoints_verifies_in_the_store_and_as_an_export) {
  checkpoint_at(4, key);
  checkpoint_at(9, key);
  auto v = verify(pub());
  BOOST_TEST(v.ok, v.reason.value_or(""));
  BOOST_TEST(v.rows == 10u);
  BOOST_TEST(v.checkpoints == 2u);
  BOOST_TEST(v.checkpoints_verified);
  BOOST_TEST((v.anchored_seq == 9u));
  auto e = verify_audit_export(export_text(), pub());
  BOOST_TEST(e.ok, e.reason.value_or(""));
  BOOST_TEST(e.checkpoints == 2u);
}

BOOST_AUTO_TEST_CASE(two_rows_deleted_and_the_rest_rechained_are_found) {
  checkpoint_at(4, key);
  checkpoint_at(9, key);
  rows.erase(rows.begin() + 5, rows.begin() + 7);  // rows 6 and 7
  rechain();
  // Without the key the chain alone looks whole: that is the attack.
  audit_verifier chain_only;
  for (const auto& r : rows) chain_only.add(r);
  BOOST_TEST(chain_only.finish().ok);
  auto v = verify(pub());
  BOOST_TEST(!v.ok);
  BOOST_TEST((v.bad_seq == 9u));  // eight rows are left: the checkpoint of row 9 names a row that is gone
  BOOST_TEST(v.reason.value_or("").find("checkpoint signed at") != std::string::npos, v.reason.value_or(""));
  auto e = verify_audit_export(export_text(), pub());
  BOOST_TEST(!e.ok);
}

BOOST_AUTO_TEST_CASE(a_rewritten_row_is_named) {
  checkpoint_at(9, key);
  rows[2].actor = "mallory";
  rechain();
  auto v = verify(pub());
  BOOST_TEST(!v.ok);
  BOOST_TEST((v.bad_seq == 9u));
  BOOST_TEST(v.reason.value_or("").find("the log was rewritten") != std::string::npos, v.reason.value_or(""));
}

BOOST_AUTO_TEST_CASE(a_truncated_log_is_named) {
  checkpoint_at(9, key);
  rows.resize(7);
  auto v = verify(pub());
  BOOST_TEST(!v.ok);
  BOOST_TEST((v.bad_seq == 9u));
  BOOST_TEST(v.reason.value_or("").find("truncated") != std::string::npos, v.reason.value_or(""));
}

BOOST_AUTO_TEST_CASE(deleted_checkpoints_leave_a_log_that_is_not_anchored) {
  auto v = verify(pub());
  BOOST_TEST(!v.ok);
  BOOST_TEST(v.reason.value_or("").find("not anchored") != std::string::npos, v.reason.value_or(""));
  BOOST_TEST(verify(std::nullopt).ok, "without a key only the chain is checked");
}

BOOST_AUTO_TEST_CASE(a_forged_or_foreign_checkpoint_does_not_verify) {
  rows[2].actor = "mallory";
  rechain();
  checkpoint_at(9, other);  // re-signed by whoever rewrote it, under the same key name
  auto v = verify(pub());
  BOOST_TEST(!v.ok);
  BOOST_TEST(v.reason.value_or("").find("does not verify") != std::string::npos, v.reason.value_or(""));
  checkpoints.clear();
  checkpoint_at(9, key);
  checkpoints[0].seq = 8;  // moved to another row
  BOOST_TEST(!verify(pub()).ok);
}

BOOST_AUTO_TEST_CASE(an_export_with_a_line_that_is_neither_row_nor_checkpoint_is_broken) {
  checkpoint_at(4, key);
  auto text = export_text();
  text.insert(text.find('\n') + 1, "{\"note\":\"inserted\"}\n");
  auto v = verify_audit_export(text, pub());
  BOOST_TEST(!v.ok);
  BOOST_TEST((v.bad_seq == 2u));
}

BOOST_AUTO_TEST_SUITE_END()
