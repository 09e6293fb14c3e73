// Test helper: drive one coroutine to completion on a fresh io_context.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <exception>
#include <optional>

namespace nixfleet::test {

template <class T>
T run_sync(boost::asio::io_context& ctx, boost::asio::awaitable<T> task) {
  std::optional<T> out;
  std::exception_ptr error;
  boost::asio::co_spawn(ctx, std::move(task), [&](std::exception_ptr e, T v) {
    error = e;
    if (!e) out.emplace(std::move(v));
  });
  ctx.run();
  ctx.restart();
  if (error) std::rethrow_exception(error);
  return std::move(*out);
}

template <class T>
T run_sync(boost::asio::awaitable<T> task) {
  boost::asio::io_context ctx;
  return run_sync(ctx, std::move(task));
}

}  // namespace nixfleet::test
