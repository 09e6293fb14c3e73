// An in-memory store for the coordinator's service: it keeps every committed change set, and can
// be told to fail commits (a full disk, a lost database) to show what the service does then.
#pragma once

#include "nixfleet/coordinator/io/storage.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace nixfleet::test {

struct fake_store_state {
  std::mutex mutex;
  coordinator::io::loaded_state initial;
  std::vector<coordinator::io::change_set> committed;
  std::atomic<bool> fail_commits{false};
  std::atomic<int> commit_delay_ms{0};  // each commit takes this long (a slow disk)
  std::atomic<std::uint64_t> operations{0};
  std::atomic<std::uint64_t> key_lookups{0};
  // Written by another process (`nixfleet-coordinator keys create`), not through the service.
  std::vector<coordinator::io::change_set> outside;

  std::vector<coordinator::io::change_set> commits() {
    std::lock_guard lock(mutex);
    return committed;
  }
};

class fake_storage final : public coordinator::io::storage {
 public:
  explicit fake_storage(std::shared_ptr<fake_store_state> s) : s_(std::move(s)) {}

  coordinator::io::loaded_state load() override {
    ++s_->operations;
    std::lock_guard lock(s_->mutex);
    return s_->initial;
  }
  std::vector<std::string> commit(const std::vector<const coordinator::io::change_set*>& sets) override {
    ++s_->operations;
    if (int d = s_->commit_delay_ms.load(); d > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d));
    std::lock_guard lock(s_->mutex);
    if (s_->fail_commits) return std::vector<std::string>(sets.size(), "disk I/O error (injected)");
    for (const auto* cs : sets) s_->committed.push_back(*cs);
    return std::vector<std::string>(sets.size());
  }
  std::vector<protocol::audit_event> audit(const coordinator::io::audit_query&) override { return {}; }
  protocol::audit_verification verify_audit(const std::optional<protocol::public_key>&) override { return {}; }
  std::optional<protocol::audit_checkpoint> checkpoint_audit(const protocol::secret_key&, protocol::timestamp) override {
    return std::nullopt;
  }
  std::vector<protocol::audit_checkpoint> audit_checkpoints(std::uint64_t, std::uint32_t) override { return {}; }
  std::uint64_t prune_reports(protocol::timestamp, std::uint64_t) override { return 0; }
  std::vector<coordinator::io::stored_report> reports(const std::string&, std::uint32_t,
                                                     const std::vector<protocol::report_kind>&) override {
    return {};
  }
  std::uint64_t report_count() override { return 0; }
  std::vector<coordinator::io::delivery_job> due_deliveries(protocol::timestamp, std::uint32_t) override { return {}; }
  void record_delivery(const coordinator::io::delivery_outcome&) override {}
  std::vector<protocol::webhook_delivery> deliveries(const std::string&, std::uint32_t) override { return {}; }
  std::map<std::string, std::uint64_t> pending_deliveries() override { return {}; }
  std::uint64_t prune_deliveries(protocol::timestamp) override { return 0; }
  std::optional<coordinator::io::key_record> find_key(const std::string& hash) override {
    ++s_->operations;
    ++s_->key_lookups;
    for (auto& k : list_locked())
      if (k.hash == hash) return k;
    return std::nullopt;
  }
  std::vector<coordinator::io::key_record> list_keys() override {
    ++s_->operations;
    return list_locked();
  }
  std::uint64_t operations() const noexcept override { return s_->operations; }

 private:
  // The initial keys, then each committed set's writes and deletions in order.
  std::vector<coordinator::io::key_record> list_locked() {
    std::lock_guard lock(s_->mutex);
    std::vector<coordinator::io::key_record> keys = s_->initial.keys;
    auto apply = [&keys](const coordinator::io::change_set& cs) {
      for (const auto& k : cs.keys) {
        std::erase_if(keys, [&](const auto& x) { return x.info.id == k.info.id; });
        keys.push_back(k);
      }
      for (const auto& id : cs.deleted_keys) std::erase_if(keys, [&](const auto& x) { return x.info.id == id; });
    };
    for (const auto& cs : s_->committed) apply(cs);
    for (const auto& cs : s_->outside) apply(cs);
    return keys;
  }

  std::shared_ptr<fake_store_state> s_;
};

}  // namespace nixfleet::test
