// Sealed JSON state files.
#include "nixfleet/agent/io/state_store.hpp"

#include "nixfleet/common/durable_file.hpp"
#include "nixfleet/protocol/canonical_json.hpp"
#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/json_fields.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>

namespace nixfleet::agent {
namespace core {

template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, quarantine_entry>
void describe(V& v, X& x) {
  v.req("store_path", x.store_path, {.fn = protocol::check_store_path});
  v.req("attempt", x.attempt);
  v.def("reason", x.reason);
}

template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, high_water>
void describe(V& v, X& x) {
  v.req("sequence", x.sequence);
  v.req("at", x.at);
  v.def("release_id", x.release_id);
}

template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, in_flight>
void describe(V& v, X& x) {
  v.req("target", x.target, {.fn = protocol::check_store_path});
  v.req("previous", x.previous, {.fn = protocol::check_store_path});
  v.def("release_id", x.release_id);
  v.opt("rollout_id", x.rollout_id);
  v.req("attempt", x.attempt);
  v.req("mode", x.mode);
  bool rolling_back = x.stage == in_flight::phase::rolling_back;
  v.req("rolling_back", rolling_back);
  if constexpr (!std::is_const_v<X>)
    x.stage = rolling_back ? in_flight::phase::rolling_back : in_flight::phase::activating;
  v.def("reason", x.reason);
  v.def("manual", x.manual);
  v.opt("accepts", x.accepts);
}

}  // namespace core

namespace io {

template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, persistent_state>
void describe(V& v, X& x) {
  v.opt("last_good", x.last_good, {.fn = protocol::check_store_path});
  v.def("confirmed", x.confirmed, {.fn = protocol::check_store_path, .max_items = 1024});
  v.def("quarantine", x.quarantine, {.max_items = 1024});
  v.def("hold", x.hold);
  v.opt("accepted", x.accepted);
  v.opt("step_back", x.step_back, {.fn = protocol::check_store_path});
  v.opt("staged_boot", x.staged_boot, {.fn = protocol::check_store_path});
  // Kept in its wire form, so that the signature still verifies after a restart.
  std::optional<boost::json::object> revocations;
  if constexpr (std::is_const_v<X>)
    if (x.revocations) revocations = protocol::to_json(*x.revocations).as_object();
  v.opt("revocations", revocations);
  if constexpr (!std::is_const_v<X>) {
    if (revocations) {
      auto list = protocol::from_json<protocol::revocation_list>(*revocations);
      v.ensure(list.has_value(), "revocations", protocol::errc::invalid_combination, "not a revocation list");
      if (list) x.revocations = std::move(*list);
    }
  }
}

namespace {

constexpr std::string_view format_tag = "nixfleet-agent-state/1";
constexpr std::size_t max_quarantine = 64;

template <class T>
boost::json::value encode(const T& v) {
  boost::json::object obj;
  protocol::fields::encoder e(obj);
  describe(e, v);
  return obj;
}

template <class T>
protocol::decoded<T> decode(const boost::json::value& v) {
  std::optional<protocol::decode_error> err;
  T out{};
  protocol::fields::decoder d(v, nullptr, err);
  if (d.ok()) describe(d, out);
  if (err) return *err;
  return out;
}

// Reads and checks one file; a corrupt one is moved aside and reported as a problem.
template <class T>
loaded<std::optional<T>> load(const std::filesystem::path& file) {
  loaded<std::optional<T>> out;
  auto text = durable::read_file(file, 4 << 20);
  if (!text) {
    if (text.error() != boost::system::errc::no_such_file_or_directory)
      out.problem = file.string() + ": " + text.error().message();
    return out;
  }
  std::string why;
  if (auto data = unseal(*text)) {
    if (auto v = decode<T>(*data)) {
      out.value = std::move(*v);
      return out;
    } else {
      why = v.error().what();
    }
  } else {
    why = "torn or corrupted (checksum mismatch or malformed)";
  }
  auto aside = file;
  aside += ".corrupt";
  std::error_code ec;
  std::filesystem::rename(file, aside, ec);
  out.problem = file.string() + " " + why + "; moved to " + aside.string();
  return out;
}

}  // namespace

std::string seal(const boost::json::value& data) {
  boost::json::object o;
  o["format"] = format_tag;
  o["sha256"] = protocol::sha256_hex(protocol::canonicalize(data).value());
  o["data"] = data;
  return boost::json::serialize(o) + "\n";
}

boost::system::result<boost::json::value> unseal(std::string_view text) {
  const boost::system::error_code bad = protocol::errc::invalid_json;
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec || !v.is_object()) return bad;
  const auto& o = v.get_object();
  const auto* fmt = o.if_contains("format");
  const auto* sum = o.if_contains("sha256");
  const auto* data = o.if_contains("data");
  if (!fmt || !sum || !data || !fmt->is_string() || fmt->get_string() != format_tag || !sum->is_string()) return bad;
  auto canon = protocol::canonicalize(*data);
  if (!canon || protocol::sha256_hex(*canon) != sum->get_string()) return bad;
  return *data;
}

boost::system::error_code state_store::prepare() const {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return {ec.value(), boost::system::generic_category()};
  if (::chmod(dir_.c_str(), 0700) != 0) return {errno, boost::system::generic_category()};
  return {};
}

bool state_store::volatile_storage() const {
  struct statfs st {};
  return ::statfs(dir_.c_str(), &st) == 0 && st.f_type == TMPFS_MAGIC;
}

loaded<std::optional<core::in_flight>> state_store::load_record() const {
  return load<core::in_flight>(dir_ / "in-flight.json");
}

loaded<persistent_state> state_store::load_state() const {
  auto l = load<persistent_state>(dir_ / "state.json");
  return {l.value.value_or(persistent_state{}), l.problem};
}

boost::asio::awaitable<boost::system::error_code> state_store::save_record(core::in_flight record) const {
  co_return co_await durable::replace_file(dir_ / "in-flight.json", seal(encode(record)));
}

boost::system::error_code state_store::clear_record() const { return durable::remove_file(dir_ / "in-flight.json"); }

boost::asio::awaitable<boost::system::error_code> state_store::save_state(persistent_state state) const {
  if (state.confirmed.size() > 16)
    state.confirmed.erase(state.confirmed.begin(), state.confirmed.end() - 16);
  if (state.quarantine.size() > max_quarantine)
    state.quarantine.erase(state.quarantine.begin(),
                           state.quarantine.end() - static_cast<std::ptrdiff_t>(max_quarantine));
  co_return co_await durable::replace_file(dir_ / "state.json", seal(encode(state)));
}

namespace {
struct saved_outbox {
  std::uint64_t next_seq = 1;
  std::vector<boost::json::object> reports;  // wire encoding of each report
};
template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, saved_outbox>
void describe(V& v, X& x) {
  v.req("next_seq", x.next_seq);
  v.def("reports", x.reports, {.max_items = 1000000});
}
}  // namespace

loaded<core::outbox> state_store::load_outbox(std::size_t limit) const {
  auto l = load<saved_outbox>(dir_ / "outbox.json");
  core::outbox box(limit);
  if (!l.value) return {std::move(box), l.problem};
  std::vector<protocol::report> reports;
  for (const auto& o : l.value->reports) {
    auto r = protocol::from_json<protocol::report>(o);
    if (!r) return {core::outbox(limit, l.value->next_seq), "outbox.json holds an invalid report: " + r.error().what()};
    reports.push_back(std::move(*r));
  }
  box.restore(l.value->next_seq, std::move(reports));
  return {std::move(box), l.problem};
}

boost::asio::awaitable<boost::system::error_code> state_store::save_outbox(const core::outbox& box) const {
  saved_outbox s{box.next_seq(), {}};
  for (const auto& r : box.items())
    if (!core::outbox::is_periodic(r.kind)) s.reports.push_back(protocol::to_json(r).as_object());
  co_return co_await durable::replace_file(dir_ / "outbox.json", seal(encode(s)));
}

}  // namespace io
}  // namespace nixfleet::agent
