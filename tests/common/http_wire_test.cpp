// The quick path's wire code: which request heads it takes (only the plain case; everything else
// goes to Beast's parser), and the response writer, byte for byte what Beast wrote before it.
#include "nixfleet/common/http_wire.hpp"

#include <boost/beast/http.hpp>
#include <boost/test/unit_test.hpp>

#include <sstream>

using namespace nixfleet;
namespace http = boost::beast::http;

namespace {

// What the server sent for `r` when Beast serialized its answers.
std::string beast_bytes(const http_response& r, unsigned version, bool keep_alive) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "nixfleet");
  if (!r.body.empty() || r.status != 204) res.set(http::field::content_type, r.content_type);
  for (auto& [k, v] : r.headers) res.set(k, v);
  res.body() = r.body;
  res.keep_alive(keep_alive);
  res.prepare_payload();
  std::ostringstream out;
  out << res;
  return out.str();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(http_wire_tests)

BOOST_AUTO_TEST_CASE(a_plain_head_is_read_in_place_with_its_fields_and_size) {
  const std::string data =
      "GET /api/v1/machines/web-01/desired?wait=60 HTTP/1.1\r\nHost: fleet\r\nif-none-match:  \"abc\" \r\n"
      "X-Nixfleet-Protocol: 1\r\nContent-Length: 0\r\n\r\nGET /next HTTP/1.1\r\n";
  auto h = http_wire::read_request_head(data, 16384);
  BOOST_TEST_REQUIRE(h.has_value());
  BOOST_TEST(h->method == "GET");
  BOOST_TEST(h->target == "/api/v1/machines/web-01/desired?wait=60");
  BOOST_TEST(h->version == 11u);
  BOOST_TEST(h->keep_alive);
  BOOST_TEST(h->size == data.find("GET /next"));
  BOOST_TEST(h->field("If-None-Match").value_or("") == "\"abc\"");
  BOOST_TEST(h->field("x-nixfleet-protocol").value_or("") == "1");
  BOOST_TEST(!h->field("Authorization").has_value());

  auto close = http_wire::read_request_head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", 16384);
  BOOST_TEST_REQUIRE(close.has_value());
  BOOST_TEST(!close->keep_alive);
  auto old = http_wire::read_request_head("GET / HTTP/1.0\r\n\r\n", 16384);
  BOOST_TEST_REQUIRE(old.has_value());
  BOOST_TEST(old->version == 10u);
  BOOST_TEST(!old->keep_alive);
  auto old_kept = http_wire::read_request_head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 16384);
  BOOST_TEST_REQUIRE(old_kept.has_value());
  BOOST_TEST(old_kept->keep_alive);
}

BOOST_AUTO_TEST_CASE(anything_but_the_plain_case_is_left_to_the_full_parser) {
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 33; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  many += "\r\n";
  const std::string cases[] = {
      "GET / HTTP/1.1\r\nHost: x\r\n",                        // incomplete
      "GET / HTTP/1.1\r\nHost: x\r\n\r",                      // incomplete
      "POST /r HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",  // a body
      "POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
      "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n",
      "GET / HTTP/2.0\r\n\r\n",
      "GET / HTTP/1.1 \r\n\r\n",
      "GET  / HTTP/1.1\r\n\r\n",
      "GET http://host/ HTTP/1.1\r\n\r\n",  // absolute form
      "GET /a%2Fb HTTP/1.1\r\n\r\n",        // percent-encoded
      "GET /a\x7f HTTP/1.1\r\n\r\n",
      "G@T / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\nHost: x\r\n\r\n",            // bare LF
      "GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n",       // bare CR
      "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
      "GET / HTTP/1.1\r\n: x\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\x01" "b\r\n\r\n",
      many,
  };
  for (const auto& c : cases) BOOST_TEST(!http_wire::read_request_head(c, 16384).has_value(), c);
  // Over the header limit: Beast answers 431.
  BOOST_TEST(!http_wire::read_request_head("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 20).has_value());
  BOOST_TEST(http_wire::read_request_head("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27).has_value());
}

BOOST_AUTO_TEST_CASE(the_response_writer_writes_what_beast_wrote) {
  std::vector<http_response> answers;
  http_response ok{200, R"({"machine_id":"web-01"})", "application/json", {{"ETag", "\"0123\""}, {"X-Nixfleet-Protocol", "1"}}, {}};
  answers.push_back(ok);
  answers.push_back({304, "", "application/json", {{"ETag", "\"0123\""}, {"X-Nixfleet-Long-Poll", "300"}}, {}});
  answers.push_back({204, "", "application/json", {{"ETag", "\"none\""}}, {}});
  answers.push_back({404, R"({"error":"not_found"})", "application/json", {}, {}});
  answers.push_back({429, "{}", "application/json", {{"Retry-After", "7"}}, {}});
  answers.push_back({200, "a: 1\n", "text/plain; version=0.0.4", {}, {}});
  answers.push_back({599, "x", "text/plain", {}, {}});  // no reason phrase known
  for (const auto& r : answers)
    for (unsigned version : {10u, 11u})
      for (bool keep : {false, true}) {
        std::string ours;
        http_wire::write_response(ours, r, version, keep, "nixfleet");
        BOOST_TEST(ours == beast_bytes(r, version, keep), r.status << " HTTP/" << version << " keep-alive " << keep);
        std::string head;
        http_wire::write_response(head, r, version, keep, "nixfleet", false);
        BOOST_TEST(head + r.body == ours);
      }
}

BOOST_AUTO_TEST_SUITE_END()
