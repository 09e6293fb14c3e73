// The audit log's integrity: the hash chain over its rows, the coordinator's signed checkpoints of
// the chain head, and a streaming verifier of both that the coordinator (over its database), the
// coordinator's `audit verify` and the CLI (over an export, offline) share.
#pragma once

#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/types.hpp"

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace nixfleet::protocol {

// sha256 over the previous row's hash and the canonical JSON of this row's content.
std::string audit_row_hash(const audit_event& e);

std::string audit_checkpoint_payload(const audit_checkpoint& c);
void sign_audit_checkpoint(const secret_key& key, audit_checkpoint& c);

// Feed it the checkpoints (all before the rows, or each right after the row it names, as an
// export has them) and the rows in order; `finish` says whether the chain holds, whether every
// checkpoint matches its row (and, with a key, is signed by it), and where the first problem is.
// With a key and rows, a log without a single checkpoint is not intact: one deleted whole is
// exactly what a rewrite would leave.
class audit_verifier {
 public:
  explicit audit_verifier(std::optional<public_key> key = std::nullopt);

  void expect(const audit_checkpoint& c);
  void add(const audit_event& e);
  // A row that could not be read at all, at `seq`.
  void unreadable(std::uint64_t seq);
  audit_verification finish();
  bool broken() const noexcept { return !v_.ok; }

 private:
  void fail(std::uint64_t seq, std::string why);
  void check_signature(const audit_checkpoint& c);

  std::optional<public_key> key_;
  std::optional<trusted_keys> trust_;
  audit_verification v_;
  std::string prev_ = std::string(64, '0');
  std::uint64_t last_seq_ = 0;
  std::map<std::uint64_t, audit_checkpoint> pending_;
};

// An export in JSON lines (`GET /api/v1/audit/export?format=jsonl`): each line a row, or
// {"checkpoint": {…}} right after the row it covers. A line that is neither is a broken export.
audit_verification verify_audit_export(std::string_view jsonl, const std::optional<public_key>& key);

// The line of an export that carries a checkpoint.
std::string audit_checkpoint_line(const audit_checkpoint& c);

}  // namespace nixfleet::protocol
