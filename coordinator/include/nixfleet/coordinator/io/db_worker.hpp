// The store's own thread: network threads never wait on the disk. Change sets queued while a
// transaction is being written are committed together in the next one (group commit).
#pragma once

#include "nixfleet/coordinator/io/storage.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace nixfleet::coordinator::io {

struct write_stats {
  std::uint64_t transactions = 0;
  std::uint64_t change_sets = 0;
  std::chrono::nanoseconds busy{0};
};

class db_worker {
 public:
  explicit db_worker(storage& store);
  ~db_worker();
  db_worker(const db_worker&) = delete;
  db_worker& operator=(const db_worker&) = delete;

  // Commits `changes`; completes with an empty string once durable, or with why it failed.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto commit(change_set changes, Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(std::string)>(
        [this](auto handler, change_set c) {
          boost::asio::any_io_executor ex = boost::asio::get_associated_executor(handler);
          enqueue_write(std::move(c), std::move(ex),
                        boost::asio::any_completion_handler<void(std::string)>(std::move(handler)));
        },
        token, std::move(changes));
  }

  // Runs `fn(store)` on the store's thread (reads: audit queries, exports); exceptions travel back.
  // Pass a named callable: GCC 12 mishandles temporaries with destructors in co_await expressions.
  template <class R, class F>
  boost::asio::awaitable<R> run(F fn) {
    std::exception_ptr error;
    std::optional<R> result;
    co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>, void()>(
        [this, &fn, &error, &result](auto handler) {
          boost::asio::any_io_executor ex = boost::asio::get_associated_executor(handler);
          enqueue_task(
              [&fn, &error, &result](storage& s) {
                try {
                  result.emplace(fn(s));
                } catch (...) {
                  error = std::current_exception();
                }
              },
              std::move(ex), boost::asio::any_completion_handler<void()>(std::move(handler)));
        },
        boost::asio::use_awaitable);
    if (error) std::rethrow_exception(error);
    co_return std::move(*result);
  }

  write_stats stats() const;
  // Work queued or running.
  std::size_t backlog() const;

 private:
  struct write_job {
    change_set changes;
    boost::asio::any_io_executor ex;
    boost::asio::any_completion_handler<void(std::string)> done;
  };
  struct task_job {
    std::function<void(storage&)> fn;
    boost::asio::any_io_executor ex;
    boost::asio::any_completion_handler<void()> done;
  };

  void enqueue_write(change_set c, boost::asio::any_io_executor ex,
                     boost::asio::any_completion_handler<void(std::string)> done);
  void enqueue_task(std::function<void(storage&)> fn, boost::asio::any_io_executor ex,
                    boost::asio::any_completion_handler<void()> done);
  void loop();

  storage& store_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<write_job> writes_;
  std::deque<task_job> tasks_;
  std::size_t running_ = 0;
  bool stopping_ = false;
  write_stats stats_;
  std::thread thread_;
};

}  // namespace nixfleet::coordinator::io
