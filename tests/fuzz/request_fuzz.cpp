// Fuzzes the coordinator's request handler itself: each input is a whole HTTP request, parsed as
// the server parses one (same header and body limits), handed to the route table with a principal
// the input's first byte picks (none, an agent certificate, one that names no one, or an API key
// of each role), against an in-memory store.
// Properties beyond "no crash": no exception escapes the handler, no answer is a 5xx other than
// 503, every status is a real one, and a JSON answer is JSON. And the quick path against the full
// one: a head the quick reader takes, Beast reads the same (method, target, version, keep-alive,
// fields), and a poll the coordinator answers from the head is answered with the bytes the full
// path gives.
#include "../../coordinator/io/service_impl.hpp"
#include "../coordinator/fake_storage.hpp"

#include "nixfleet/common/http_wire.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/json/parse.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string_view>

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using nixfleet::coordinator::io::service;

const std::string keys[] = {"nfk_" + std::string(64, '1'), "nfk_" + std::string(64, '2'), "nfk_" + std::string(64, '3')};

struct harness {
  asio::io_context ctx;
  std::shared_ptr<nixfleet::test::fake_store_state> state;
  std::shared_ptr<service::impl> svc;
  unsigned runs = 0;

  void fresh() {
    svc.reset();
    state = std::make_shared<nixfleet::test::fake_store_state>();
    const nixfleet::protocol::role roles[] = {nixfleet::protocol::role::readonly, nixfleet::protocol::role::deploy,
                                              nixfleet::protocol::role::admin};
    for (int i = 0; i < 3; ++i)
      state->initial.keys.push_back({{"key-" + std::to_string(i), "k" + std::to_string(i), roles[i], {}, std::nullopt},
                                     nixfleet::protocol::sha256_hex(keys[i])});
    nixfleet::coordinator::io::service_options o;
    o.open_store = [s = state] { return std::make_unique<nixfleet::test::fake_storage>(s); };
    o.clock = [] { return nixfleet::protocol::timestamp(std::chrono::milliseconds(1'790'000'000'000)); };
    o.audit_key = nixfleet::protocol::generate_secret_key("fuzz-audit");
    svc = std::make_shared<service::impl>(ctx, o);
  }
};

harness& the() {
  static harness h;
  if (!h.svc || ++h.runs % 5000 == 0) h.fresh();  // bounded memory across a long run
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const unsigned who = data[0] % 6;
  http::request_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(1 << 20);
  parser.eager(true);
  boost::system::error_code ec;
  parser.put(asio::buffer(data + 1, size - 1), ec);
  if (!ec && !parser.is_done()) parser.put_eof(ec);
  if (ec || !parser.is_done()) return 0;

  auto& h = the();
  nixfleet::http_request req{parser.release(), {}, true, "127.0.0.1:1"};
  if (who == 1) req.client.id = "web-1";
  if (who == 2) req.client.problem = "the client certificate's subject has 2 CNs";

  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  std::optional<std::string> quick;
  if (auto head = nixfleet::http_wire::read_request_head(input, 16 * 1024)) {
    if (head->method != req.msg.method_string() || head->target != req.msg.target() ||
        head->version != req.msg.version() || head->keep_alive != req.msg.keep_alive())
      std::abort();
    for (std::size_t i = 0; i < head->field_count; ++i) {
      auto it = req.msg.find(head->fields[i].first);
      if (it == req.msg.end() || head->field(head->fields[i].first) != it->value()) std::abort();
    }
    if (who < 3 && !head->field("Authorization")) {
      std::string out;
      if (h.svc->quick_answer(nixfleet::quick_request{*head, req.client, true, head->keep_alive}, out))
        quick = std::move(out);
    }
  }
  req.msg.erase(http::field::authorization);
  if (who >= 3) req.msg.set(http::field::authorization, "Bearer " + keys[who - 3]);
  {
    std::lock_guard lock(h.state->mutex);
    h.state->committed.clear();
  }

  bool done = false;
  std::exception_ptr failure;
  nixfleet::http_response answer;
  asio::co_spawn(
      h.ctx,
      [&]() -> asio::awaitable<void> {
        answer = co_await h.svc->handle(req);
        // A streamed body is read to its end, as the server would.
        if (answer.stream)
          for (std::string chunk = co_await answer.stream(); !chunk.empty(); chunk = co_await answer.stream()) answer.body += chunk;
      },
      // Done only here: this runs after the coroutine has finished, and nothing of this call's
      // stack may be touched once the loop below has left.
      [&](std::exception_ptr e) {
        failure = e;
        done = true;
      });
  while (!done) {
    if (h.ctx.stopped()) h.ctx.restart();
    h.ctx.run_one_for(std::chrono::milliseconds(10));
  }
  if (failure) std::abort();  // the server would answer 500 "internal": a bug
  static const bool verbose = std::getenv("REQUEST_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s %s -> %u\n", std::string(req.msg.method_string()).c_str(),
                            std::string(req.msg.target()).c_str(), answer.status);
  if (answer.status < 100 || answer.status > 599) std::abort();
  if (quick) {
    if (answer.held || answer.stream) std::abort();
    // What the server adds to every API answer (service.cpp's handler and error renderer).
    std::string full;
    nixfleet::http_wire::write_response(full, answer, req.msg.version(), req.msg.keep_alive(), "nixfleet");
    if (full != *quick) std::abort();
  }
  if (answer.status >= 500 && answer.status != 503) std::abort();
  if (answer.content_type == "application/json" && !answer.body.empty()) {
    boost::system::error_code jec;
    (void)boost::json::parse(answer.body, jec);
    if (jec) std::abort();
  }
  return 0;
}
