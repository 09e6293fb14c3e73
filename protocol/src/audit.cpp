// Audit chain hashes, checkpoint signatures and their verification.
#include "nixfleet/protocol/audit.hpp"

#include "nixfleet/protocol/canonical_json.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/time.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <stdexcept>

namespace nixfleet::protocol {

std::string audit_row_hash(const audit_event& e) {
  boost::json::object o;
  o["seq"] = e.seq;
  o["at"] = format_time(e.at);
  o["actor"] = e.actor;
  o["action"] = e.action;
  o["target"] = e.target;
  o["detail"] = e.detail;
  auto canonical = canonicalize(o);
  if (!canonical) throw std::runtime_error("audit detail cannot be canonicalised");
  return sha256_hex(e.prev_hash + *canonical);
}

std::string audit_checkpoint_payload(const audit_checkpoint& c) {
  return "nixfleet-audit-checkpoint-v1\n" + std::to_string(c.seq) + "\n" + c.hash + "\n" + format_time(c.at);
}

void sign_audit_checkpoint(const secret_key& key, audit_checkpoint& c) {
  c.signature = sign(key, audit_checkpoint_payload(c)).to_string();
}

audit_verifier::audit_verifier(std::optional<public_key> key) : key_(std::move(key)) {
  if (key_) trust_.emplace(std::vector<public_key>{*key_});
  v_.checkpoints_verified = key_.has_value();
}

void audit_verifier::fail(std::uint64_t seq, std::string why) {
  if (!v_.ok) return;  // the first problem is the one named
  v_.ok = false;
  v_.bad_seq = seq;
  v_.reason = std::move(why);
}

void audit_verifier::check_signature(const audit_checkpoint& c) {
  if (!trust_) return;
  if (auto ec = trust_->verify(audit_checkpoint_payload(c), c.signature))
    fail(c.seq, "the checkpoint of row " + std::to_string(c.seq) + " signed at " + format_time(c.at) +
                    " does not verify with " + key_->name + " (" + ec.message() + ")");
}

void audit_verifier::expect(const audit_checkpoint& c) {
  check_signature(c);
  if (c.seq == 0 || c.seq < last_seq_) {
    fail(c.seq, "a checkpoint of row " + std::to_string(c.seq) + " comes after row " + std::to_string(last_seq_));
  } else if (c.seq == last_seq_) {
    if (c.hash != prev_)
      fail(c.seq, "row " + std::to_string(c.seq) + " is not the row the checkpoint signed at " + format_time(c.at) +
                      " covers: the log was rewritten");
    else {
      ++v_.checkpoints;
      v_.anchored_seq = c.seq;
    }
  } else {
    pending_[c.seq] = c;
  }
}

void audit_verifier::unreadable(std::uint64_t seq) {
  ++v_.rows;
  fail(seq, "row does not parse");
}

void audit_verifier::add(const audit_event& e) {
  ++v_.rows;
  if (e.seq != last_seq_ + 1) fail(e.seq, "sequence gap (a row was removed)");
  else if (e.prev_hash != prev_) fail(e.seq, "prev_hash does not match the row before");
  else if (audit_row_hash(e) != e.hash) fail(e.seq, "hash does not match the row's content");
  last_seq_ = e.seq;
  prev_ = e.hash;
  // Everything named before this row that this row skipped over was never seen: a row it
  // covers is missing.
  while (!pending_.empty() && pending_.begin()->first < e.seq) {
    const auto& c = pending_.begin()->second;
    fail(c.seq, "row " + std::to_string(c.seq) + ", covered by the checkpoint signed at " + format_time(c.at) +
                    ", is missing");
    pending_.erase(pending_.begin());
  }
  if (auto it = pending_.find(e.seq); it != pending_.end()) {
    if (it->second.hash != e.hash)
      fail(e.seq, "row " + std::to_string(e.seq) + " is not the row the checkpoint signed at " +
                      format_time(it->second.at) + " covers: the log was rewritten");
    else {
      ++v_.checkpoints;
      v_.anchored_seq = e.seq;
    }
    pending_.erase(it);
  }
}

audit_verification audit_verifier::finish() {
  if (!pending_.empty()) {
    const auto& c = pending_.begin()->second;
    fail(c.seq, "the log ends at row " + std::to_string(last_seq_) + " but a checkpoint signed at " +
                    format_time(c.at) + " covers row " + std::to_string(c.seq) + ": it was truncated");
  }
  if (key_ && v_.rows > 0 && v_.checkpoints == 0 && v_.ok)
    fail(1, "no checkpoint signed by " + key_->name + ": the log is not anchored (were its checkpoints deleted?)");
  return v_;
}

std::string audit_checkpoint_line(const audit_checkpoint& c) {
  return boost::json::serialize(boost::json::object{{"checkpoint", to_json(c)}});
}

audit_verification verify_audit_export(std::string_view jsonl, const std::optional<public_key>& key) {
  audit_verifier verifier(key);
  std::uint64_t line_no = 0, last_seq = 0;
  while (!jsonl.empty() && !verifier.broken()) {
    const auto nl = jsonl.find('\n');
    const auto line = jsonl.substr(0, nl);
    jsonl = nl == std::string_view::npos ? std::string_view{} : jsonl.substr(nl + 1);
    ++line_no;
    if (line.empty()) continue;
    boost::system::error_code ec;
    auto v = boost::json::parse(line, ec);
    const auto* obj = ec ? nullptr : v.if_object();
    if (obj != nullptr && obj->size() == 1 && obj->contains("checkpoint")) {
      auto c = from_json<audit_checkpoint>(obj->at("checkpoint"));
      if (!c) {
        verifier.unreadable(last_seq + 1);
        break;
      }
      verifier.expect(*c);
      continue;
    }
    if (obj == nullptr) {
      verifier.unreadable(last_seq + 1);
      break;
    }
    auto e = from_json<audit_event>(v);
    if (!e) {
      verifier.unreadable(last_seq + 1);
      break;
    }
    last_seq = e->seq;
    verifier.add(*e);
  }
  return verifier.finish();
}

}  // namespace nixfleet::protocol
