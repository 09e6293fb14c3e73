// The store's thread: takes every queued change set, commits them in one transaction, and
// completes each waiter on its own executor.
#include "nixfleet/coordinator/io/db_worker.hpp"

#include "nixfleet/common/log.hpp"

#include <boost/asio/associated_executor.hpp>

namespace nixfleet::coordinator::io {

namespace asio = boost::asio;

namespace {
// Completes a handler on the executor it is associated with (the waiting coroutine's).
template <class Handler, class... Args>
void complete(const asio::any_io_executor& ex, Handler h, Args... args) {
  asio::post(ex, [h = std::move(h), ... args = std::move(args)]() mutable { std::move(h)(std::move(args)...); });
}
}  // namespace

db_worker::db_worker(storage& store) : store_(store), thread_([this] { loop(); }) {}

db_worker::~db_worker() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void db_worker::enqueue_write(change_set c, asio::any_io_executor ex,
                              asio::any_completion_handler<void(std::string)> done) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      complete(ex, std::move(done), std::string("the store is shutting down"));
      return;
    }
    writes_.push_back({std::move(c), std::move(ex), std::move(done)});
  }
  cv_.notify_one();
}

void db_worker::enqueue_task(std::function<void(storage&)> fn, asio::any_io_executor ex,
                             asio::any_completion_handler<void()> done) {
  {
    std::lock_guard lock(mu_);
    tasks_.push_back({std::move(fn), std::move(ex), std::move(done)});
  }
  cv_.notify_one();
}

write_stats db_worker::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::size_t db_worker::backlog() const {
  std::lock_guard lock(mu_);
  return writes_.size() + tasks_.size() + running_;
}

void db_worker::loop() {
  for (;;) {
    std::deque<write_job> writes;
    std::deque<task_job> tasks;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !writes_.empty() || !tasks_.empty(); });
      if (writes_.empty() && tasks_.empty()) return;  // stopping, and everything queued is done
      writes.swap(writes_);
      tasks.swap(tasks_);
      running_ = writes.size() + tasks.size();
    }
    if (!writes.empty()) {
      std::vector<const change_set*> sets;
      sets.reserve(writes.size());
      for (const auto& w : writes) sets.push_back(&w.changes);
      const auto start = std::chrono::steady_clock::now();
      std::vector<std::string> results;
      try {
        results = store_.commit(sets);
      } catch (const std::exception& e) {
        results.assign(sets.size(), e.what());
      }
      const auto took = std::chrono::steady_clock::now() - start;
      {
        std::lock_guard lock(mu_);
        ++stats_.transactions;
        stats_.change_sets += sets.size();
        stats_.busy += std::chrono::duration_cast<std::chrono::nanoseconds>(took);
      }
      for (std::size_t i = 0; i < writes.size(); ++i) {
        if (!results[i].empty()) log::error("store_commit_failed", {{"error", results[i]}});
        complete(writes[i].ex, std::move(writes[i].done), std::move(results[i]));
      }
    }
    for (auto& t : tasks) {
      t.fn(store_);
      complete(t.ex, std::move(t.done));
    }
    std::lock_guard lock(mu_);
    running_ = 0;
  }
}

}  // namespace nixfleet::coordinator::io
