// Break-glass commands over a unix socket.
#include "nixfleet/agent/io/control.hpp"

#include "nixfleet/agent/io/runtime.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/protocol/codec.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <filesystem>
#include <sys/stat.h>

namespace nixfleet::agent::io {
namespace asio = boost::asio;
using stream = asio::local::stream_protocol;

namespace {

boost::json::value error_answer(std::string message) {
  return boost::json::object{{"ok", false}, {"error", std::move(message)}};
}

boost::json::value status_of(agent_runtime& rt) {
  auto& drv = rt.driver();
  auto& st = drv.state();
  boost::json::object o;
  o["ok"] = true;
  o["stage"] = core::to_string(rt.deployer().current());
  const auto facts = drv.facts(core::trust_policy{});
  o["current"] = facts.current_path;
  o["last_good"] = st.last_good ? boost::json::value(*st.last_good) : boost::json::value(nullptr);
  o["hold"] = st.hold;
  // What anti-downgrade holds this host to.
  if (st.accepted)
    o["accepted_release"] = boost::json::object{{"release_id", st.accepted->release_id},
                                                {"sequence", st.accepted->sequence},
                                                {"at", protocol::format_time(st.accepted->at)}};
  else
    o["accepted_release"] = nullptr;
  o["step_back"] = st.step_back ? boost::json::value(*st.step_back) : boost::json::value(nullptr);
  o["staged_boot"] = st.staged_boot ? boost::json::value(*st.staged_boot) : boost::json::value(nullptr);
  o["revocations_sequence"] = st.revocations ? st.revocations->sequence : 0;
  boost::json::array q;
  for (const auto& e : st.quarantine)
    q.push_back(boost::json::object{{"store_path", e.store_path}, {"attempt", e.attempt}, {"reason", e.reason}});
  o["quarantine"] = std::move(q);
  if (const auto& rec = rt.deployer().record())
    o["in_flight"] = boost::json::object{{"target", rec->target}, {"previous", rec->previous},
                                         {"rolling_back", rec->stage == core::in_flight::phase::rolling_back}};
  else
    o["in_flight"] = nullptr;
  o["outbox_depth"] = rt.outbox().size();
  o["polls"] = rt.polls();
  return o;
}

// Bounded by a deadline on both the read and the write, so a client that connects and says nothing
// (or never reads) does not hold a session and a socket for ever.
asio::awaitable<void> session(stream::socket sock, agent_runtime& rt, std::chrono::milliseconds deadline) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(sock.get_executor());
  asio::streambuf buf(64 * 1024);
  timer.expires_after(deadline);
  auto read = co_await (asio::async_read_until(sock, buf, '\n', asio::as_tuple(asio::use_awaitable)) ||
                        timer.async_wait(asio::as_tuple(asio::use_awaitable)));
  boost::json::value answer;
  if (read.index() == 1) {
    answer = error_answer("no request within " + std::to_string(deadline.count()) + " ms");
  } else if (auto [ec, n] = std::get<0>(read); ec) {
    answer = error_answer(ec == asio::error::not_found ? "request too long" : "no request");
  } else {
    std::string line(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n);
    answer = co_await handle_control(line, rt);
  }
  auto text = boost::json::serialize(answer) + "\n";
  timer.expires_after(deadline);
  co_await (asio::async_write(sock, asio::buffer(text), asio::as_tuple(asio::use_awaitable)) ||
            timer.async_wait(asio::as_tuple(asio::use_awaitable)));
}

}  // namespace

asio::awaitable<boost::json::value> handle_control(const std::string& line, agent_runtime& rt) {
  boost::system::error_code ec;
  auto req = boost::json::parse(line, ec);
  const auto* obj = ec ? nullptr : req.if_object();
  const auto* cmd = obj ? obj->if_contains("command") : nullptr;
  if (cmd == nullptr || !cmd->is_string()) co_return error_answer("expected {\"command\": \"status\"|\"hold\"|\"release-hold\"|\"rollback\"}");
  const std::string command(cmd->get_string());
  auto& drv = rt.driver();
  if (command == "status") co_return status_of(rt);
  if (command == "hold" || command == "release-hold") {
    co_await drv.set_hold(command == "hold");
    log::warn(command == "hold" ? "hold set locally" : "hold released locally");
    co_return status_of(rt);
  }
  if (command == "rollback") {
    // Holds the host too: otherwise the next poll would re-apply what was just rolled back.
    co_await drv.set_hold(true);
    co_await drv.manual_rollback();
    co_return status_of(rt);
  }
  co_return error_answer("unknown command");
}

asio::awaitable<void> serve_control(std::string socket_path, agent_runtime& rt, std::chrono::milliseconds deadline) {
  auto ex = co_await asio::this_coro::executor;
  // A directory we create is private to root; an existing one is left as the operator made it.
  const auto parent = std::filesystem::path(socket_path).parent_path();
  std::error_code fec;
  if (std::filesystem::create_directories(parent, fec)) ::chmod(parent.c_str(), 0700);
  ::unlink(socket_path.c_str());
  stream::acceptor acceptor(ex, stream::endpoint(socket_path));
  ::chmod(socket_path.c_str(), 0600);
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) continue;
    asio::co_spawn(ex, session(std::move(sock), rt, deadline), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        log::warn("control session failed", {{"error", x.what()}});
      }
    });
  }
}

boost::json::value control_request(const std::string& socket_path, const std::string& command) {
  asio::io_context ctx;
  stream::socket sock(ctx);
  sock.connect(stream::endpoint(socket_path));
  const auto req = boost::json::serialize(boost::json::object{{"command", command}}) + "\n";
  asio::write(sock, asio::buffer(req));
  asio::streambuf buf(64 * 1024);
  const auto n = asio::read_until(sock, buf, '\n');
  return boost::json::parse(std::string(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n));
}

}  // namespace nixfleet::agent::io
