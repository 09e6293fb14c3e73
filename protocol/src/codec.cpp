// One field list per wire type, walked by an encoder and by a strict decoder.
#include "nixfleet/protocol/codec.hpp"

#include "nixfleet/protocol/json_fields.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

namespace nixfleet::protocol {
using namespace fields;

namespace {
constexpr spec id{.fn = check_identifier};
constexpr spec path{.fn = check_store_path};
constexpr spec short_text{.max_len = limits::max_short_text_bytes};
constexpr spec hex_hash{.max_len = 64};
}  // namespace

// ---------------------------------------------------------------------------------------
// Field lists. `X` is a wire type, const when encoding.

template <class X, class T>
concept is = std::same_as<std::remove_const_t<X>, T>;

constexpr spec cache_urls{.fn = check_cache_url, .max_items = limits::max_cache_urls};
constexpr spec tag_list{.fn = check_tag, .max_items = limits::max_tags};
constexpr spec host_list{.fn = check_identifier, .max_items = limits::max_entries};
constexpr spec signature_text{.fn = check_signature_text};

template <class V, class X>
  requires is<X, rollback_statement>
void describe(V& v, X& x) {
  v.req("hostname", x.hostname, id);
  v.req("store_path", x.store_path, path);
  v.req("issued_at", x.issued_at);
  v.req("expires_at", x.expires_at);
  v.req("reason", x.reason, spec{.max_len = limits::max_message_bytes});
  v.req("signature", x.signature, signature_text);
  v.ensure(x.expires_at > x.issued_at, "expires_at", errc::out_of_range, "must be after issued_at");
}

template <class V, class X>
  requires is<X, revocation_list>
void describe(V& v, X& x) {
  v.req("sequence", x.sequence);
  v.req("issued_at", x.issued_at);
  v.def("releases", x.releases, spec{.fn = check_identifier, .max_items = limits::max_revocations});
  v.def("store_paths", x.store_paths, spec{.fn = check_store_path, .max_items = limits::max_revocations});
  v.def("keys", x.keys, spec{.fn = check_key_name, .max_items = limits::max_revocations});
  v.req("signature", x.signature, signature_text);
  v.ensure(x.sequence >= 1 && x.sequence <= limits::max_sequence, "sequence", errc::out_of_range,
           "revocation lists are numbered from 1, below 2^53");
}

template <class V, class X>
  requires is<X, desired_state>
void describe(V& v, X& x) {
  v.req("machine_id", x.machine_id, id);
  v.req("release_id", x.release_id, id);
  v.req("store_path", x.store_path, path);
  v.req("cache_urls", x.cache_urls, cache_urls);
  v.req("activation", x.activation);
  v.nullable("rollout_id", x.rollout_id, id);
  v.req("attempt", x.attempt);
  v.nullable("entry_signature", x.entry_signature, signature_text);
  v.req("release_created_at", x.release_created_at);
  v.nullable("poll_hint", x.poll_hint);
  v.def("release_sequence", x.release_sequence);
  v.ensure(x.release_sequence <= limits::max_sequence, "release_sequence", errc::out_of_range, "must be below 2^53");
  v.opt("rollback", x.rollback);
  v.opt("revocations_sequence", x.revocations_sequence);
  v.ensure(!x.rollback || (x.rollback->hostname == x.machine_id && x.rollback->store_path == x.store_path), "rollback",
           errc::invalid_combination, "a rollback statement must name this machine and store path");
  v.ensure(!x.poll_hint || (*x.poll_hint >= 1 && *x.poll_hint <= 86400), "poll_hint", errc::out_of_range,
           "must be between 1 and 86400 seconds");
}

template <class V, class X>
  requires is<X, probe_result>
void describe(V& v, X& x) {
  v.req("probe", x.probe, short_text);
  v.req("type", x.type, short_text);
  v.req("status", x.status);
  v.req("duration_ms", x.duration_ms);
  v.opt("message", x.message);
}

template <class V, class X>
  requires is<X, health_report>
void describe(V& v, X& x) {
  v.req("passed", x.passed);
  v.req("results", x.results, spec{.max_items = limits::max_probe_results});
}

template <class V, class X>
  requires is<X, probe_evidence>
void describe(V& v, X& x) {
  v.req("probe", x.probe, short_text);
  v.req("type", x.type, short_text);
  v.req("status", x.status);
  v.opt("message", x.message, spec{.max_len = limits::max_evidence_message_bytes});
  v.opt("output", x.output, spec{.max_len = limits::max_evidence_output_bytes});
}

template <class V, class X>
  requires is<X, forensics_bundle>
void describe(V& v, X& x) {
  v.opt("target", x.target, path);
  v.opt("previous", x.previous, path);
  v.def("probes", x.probes, spec{.max_items = limits::max_evidence_probes});
  v.def("failed_units", x.failed_units, spec{.max_len = limits::max_short_text_bytes, .max_items = limits::max_failed_units});
  v.opt("journal", x.journal, spec{.max_len = limits::max_journal_bytes});
  v.opt("switch_output", x.switch_output, spec{.max_len = limits::max_switch_output_bytes});
  v.def("closure_diff", x.closure_diff,
        spec{.max_len = limits::max_short_text_bytes, .max_items = limits::max_closure_diff_lines});
  v.def("closure_changes", x.closure_changes);
  v.def("notes", x.notes, spec{.max_len = limits::max_short_text_bytes, .max_items = limits::max_forensics_notes});
  v.ensure(x.closure_changes >= x.closure_diff.size(), "closure_changes", errc::out_of_range,
           "counts the lines before the list was cut: at least as many as closure_diff holds");
}

// Kinds that are about one target store path.
constexpr bool kind_needs_store_path(report_kind k) noexcept {
  return k != report_kind::heartbeat && k != report_kind::up_to_date && k != report_kind::health;
}

template <class V, class X>
  requires is<X, report>
void describe(V& v, X& x) {
  v.req("seq", x.seq);
  v.req("at", x.at);
  v.req("kind", x.kind);
  v.opt("store_path", x.store_path, path);
  v.opt("release_id", x.release_id, id);
  v.opt("rollout_id", x.rollout_id, id);
  v.opt("message", x.message);
  v.opt("health", x.health);
  v.opt("current_path", x.current_path, path);
  v.opt("booted_path", x.booted_path, path);
  v.req("agent_version", x.agent_version, spec{.max_len = 64});
  v.req("uptime_s", x.uptime_s);
  v.opt("forensics", x.forensics);
  v.ensure(x.seq >= 1, "seq", errc::out_of_range, "sequence numbers start at 1");
  v.ensure(!kind_needs_store_path(x.kind) || x.store_path.has_value(), "store_path", errc::missing_field,
           "required for this kind of report");
  v.ensure(x.kind != report_kind::health || x.health.has_value(), "health", errc::missing_field,
           "required for a health report");
}

template <class V, class X>
  requires is<X, report_batch>
void describe(V& v, X& x) {
  v.req("reports", x.reports, spec{.max_items = limits::max_reports_per_batch});
}

template <class V, class X>
  requires is<X, report_ack>
void describe(V& v, X& x) {
  v.req("acked_seq", x.acked_seq);
}

template <class V, class X>
  requires is<X, release_entry>
void describe(V& v, X& x) {
  v.req("hostname", x.hostname, id);
  v.req("store_path", x.store_path, path);
  v.opt("platform", x.platform, spec{.fn = check_platform});
  v.def("tags", x.tags, tag_list);
  v.opt("signature", x.signature, signature_text);
}

bool unique_hostnames(const std::vector<release_entry>& entries) {
  std::vector<std::string_view> names;
  names.reserve(entries.size());
  for (const auto& e : entries) names.push_back(e.hostname);
  std::sort(names.begin(), names.end());
  return std::adjacent_find(names.begin(), names.end()) == names.end();
}

template <class V, class X>
void describe_release_body(V& v, X& x) {
  v.def("sequence", x.sequence);
  v.ensure(x.sequence <= limits::max_sequence, "sequence", errc::out_of_range, "must be below 2^53");
  v.def("activation", x.activation);
  v.opt("flake_ref", x.flake_ref, spec{.max_len = limits::max_flake_ref_bytes});
  v.opt("flake_rev", x.flake_rev, spec{.fn = check_flake_rev});
  v.def("cache_urls", x.cache_urls, cache_urls);
  v.req("entries", x.entries, spec{.max_items = limits::max_entries});
  v.ensure(unique_hostnames(x.entries), "entries", errc::invalid_combination, "a hostname appears twice");
}

template <class V, class X>
  requires is<X, release_request>
void describe(V& v, X& x) {
  v.req("id", x.id, id);
  v.req("created_at", x.created_at);
  describe_release_body(v, x);
  v.ensure(!x.entries.empty(), "entries", errc::missing_field, "a release needs at least one entry");
}

template <class V, class X>
  requires is<X, release>
void describe(V& v, X& x) {
  v.req("id", x.id, id);
  v.req("created_at", x.created_at);
  v.req("created_by", x.created_by, short_text);
  describe_release_body(v, x);
}

template <class V, class X>
  requires is<X, release_change>
void describe(V& v, X& x) {
  v.req("hostname", x.hostname, id);
  v.req("old", x.old_path, path);
  v.req("new", x.new_path, path);
}

template <class V, class X>
  requires is<X, release_diff>
void describe(V& v, X& x) {
  v.req("added", x.added, host_list);
  v.req("removed", x.removed, host_list);
  v.req("changed", x.changed, spec{.max_items = limits::max_entries});
  v.req("unchanged", x.unchanged, host_list);
}

template <class V, class X>
  requires is<X, rollout_target>
void describe(V& v, X& x) {
  v.def("tags", x.tags, tag_list);
  v.def("hosts", x.hosts, host_list);
  v.ensure(x.tags.empty() != x.hosts.empty(), "tags", errc::invalid_combination,
           "give exactly one of tags or hosts, not empty");
}

template <class V, class X>
  requires is<X, rollout_request>
void describe(V& v, X& x) {
  v.req("release_id", x.release_id, id);
  v.req("target", x.target);
  v.def("waves", x.waves, spec{.max_items = limits::max_waves});
  v.def("soak_s", x.soak_s);
  v.def("failure_threshold", x.failure_threshold);
  v.def("health_timeout_s", x.health_timeout_s);
  v.def("on_failure", x.on_failure);
  v.ensure(!x.waves.empty(), "waves", errc::missing_field, "at least one wave");
  v.ensure(std::all_of(x.waves.begin(), x.waves.end(), [](const size_spec& w) { return w.value >= 1; }), "waves",
           errc::invalid_size_spec, "every wave holds at least one host");
  v.ensure(x.soak_s <= 7 * 86400, "soak_s", errc::out_of_range, "at most 7 days");
  v.ensure(x.health_timeout_s >= 1 && x.health_timeout_s <= 86400, "health_timeout_s", errc::out_of_range,
           "between 1 second and 1 day");
}

template <class V, class X>
  requires is<X, rollout_host>
void describe(V& v, X& x) {
  v.req("hostname", x.hostname, id);
  v.req("wave", x.wave);
  v.req("state", x.state);
  v.opt("target_path", x.target_path, path);
  v.opt("previous_path", x.previous_path, path);
  v.opt("previous_release_id", x.previous_release_id, id);
  v.opt("attempt", x.attempt);
  v.opt("dispatched_at", x.dispatched_at);
  v.opt("message", x.message);
  v.opt("updated_at", x.updated_at);
}

template <class V, class X>
  requires is<X, rollout_wave>
void describe(V& v, X& x) {
  v.req("index", x.index);
  v.req("status", x.status);
  v.req("hosts", x.hosts, host_list);
  v.opt("started_at", x.started_at);
  v.opt("soak_until", x.soak_until);
  v.opt("finished_at", x.finished_at);
  v.def("tolerated_failures", x.tolerated_failures);
}

template <class V, class X>
  requires is<X, rollout_event>
void describe(V& v, X& x) {
  v.req("seq", x.seq);
  v.req("at", x.at);
  v.req("kind", x.kind, short_text);
  v.opt("hostname", x.hostname, id);
  v.opt("wave", x.wave);
  v.req("message", x.message);
}

template <class V, class X>
  requires is<X, rollout_detail>
void describe(V& v, X& x) {
  v.req("id", x.id, id);
  v.req("spec", x.spec);
  v.req("status", x.status);
  v.req("created_at", x.created_at);
  v.req("created_by", x.created_by, short_text);
  v.req("current_wave", x.current_wave);
  v.req("waves", x.waves, spec{.max_items = limits::max_waves});
  v.req("hosts", x.hosts);
  v.req("events", x.events);
}

template <class V, class X>
  requires is<X, resume_request>
void describe(V& v, X& x) {
  v.def("retry_failed", x.retry_failed);
}

template <class V, class X>
  requires is<X, confirmed_generation>
void describe(V& v, X& x) {
  v.req("store_path", x.store_path, path);
  v.req("confirmed_at", x.confirmed_at);
}

template <class V, class X>
  requires is<X, machine_status>
void describe(V& v, X& x) {
  v.req("id", x.id, id);
  v.def("tags", x.tags, tag_list);
  v.req("lifecycle", x.state);
  v.opt("current_path", x.current_path, path);
  v.opt("desired_path", x.desired_path, path);
  v.opt("booted_path", x.booted_path, path);
  v.opt("rollout_id", x.rollout_id, id);
  v.opt("last_seen", x.last_seen);
  v.opt("last_report", x.last_report);
  v.opt("health", x.health);
  v.def("history", x.history);
  v.opt("revoked_at", x.revoked_at);
  v.opt("certificate_expires_at", x.certificate_expires_at);
}

template <class V, class X>
  requires is<X, machine_update>
void describe(V& v, X& x) {
  v.opt("tags", x.tags, tag_list);
  v.opt("lifecycle", x.state);
  v.ensure(x.tags || x.state, "tags", errc::missing_field, "give tags, lifecycle or both");
}

template <class V, class X>
  requires is<X, rollback_request>
void describe(V& v, X& x) {
  v.opt("store_path", x.store_path, path);
  v.opt("statement", x.statement);
  v.ensure(!x.statement || (x.store_path && *x.store_path == x.statement->store_path), "statement",
           errc::invalid_combination, "a rollback statement needs store_path, and the same one");
}

template <class V, class X>
  requires is<X, audit_event>
void describe(V& v, X& x) {
  v.req("seq", x.seq);
  v.req("at", x.at);
  v.req("actor", x.actor, short_text);
  v.req("action", x.action, short_text);
  v.req("target", x.target, short_text);
  v.def("detail", x.detail);
  v.req("prev_hash", x.prev_hash, hex_hash);
  v.req("hash", x.hash, hex_hash);
}

template <class V, class X>
  requires is<X, key_request>
void describe(V& v, X& x) {
  v.req("name", x.name, spec{.fn = check_key_name});
  v.req("role", x.role);
}

template <class V, class X>
  requires is<X, api_key_info>
void describe(V& v, X& x) {
  v.req("id", x.id, id);
  v.req("name", x.name, spec{.fn = check_key_name});
  v.req("role", x.role);
  v.req("created_at", x.created_at);
  v.opt("last_used_at", x.last_used_at);
}

namespace {
// An event name or a pattern: lowercase words joined by '.', '_' inside; `*` only at the end.
boost::system::error_code check_event_pattern(std::string_view s) {
  if (s.empty() || s.size() > 64) return errc::invalid_identifier;
  if (s.ends_with('*')) s.remove_suffix(1);
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || c == '_' || c == '.')) return errc::invalid_identifier;
  return {};
}
// A shared secret: printable, without spaces, 16 to 256 bytes.
boost::system::error_code check_secret(std::string_view s) {
  if (s.size() < 16) return errc::out_of_range;
  if (s.size() > 256) return errc::too_long;
  for (unsigned char c : s)
    if (c <= 0x20 || c >= 0x7f) return errc::invalid_characters;
  return {};
}
}  // namespace

template <class V, class X>
  requires is<X, webhook_request>
void describe(V& v, X& x) {
  v.req("url", x.url, spec{.fn = check_http_url});
  v.req("events", x.events, spec{.fn = check_event_pattern, .max_items = 64});
  v.opt("secret", x.secret, spec{.fn = check_secret});
  v.opt("description", x.description, short_text);
  v.ensure(!x.events.empty(), "events", errc::missing_field, "at least one event or pattern (\"rollout.*\")");
}

template <class V, class X>
  requires is<X, webhook_info>
void describe(V& v, X& x) {
  v.req("id", x.id, id);
  v.req("url", x.url, spec{.fn = check_http_url});
  v.req("events", x.events, spec{.fn = check_event_pattern, .max_items = 64});
  v.opt("description", x.description, short_text);
  v.req("signed", x.signed_);
  v.req("created_at", x.created_at);
  v.req("created_by", x.created_by, short_text);
  v.def("pending", x.pending);
}

template <class V, class X>
  requires is<X, webhook_delivery>
void describe(V& v, X& x) {
  v.req("id", x.id);
  v.req("hook_id", x.hook_id, id);
  v.req("event", x.event, spec{.fn = check_event_pattern});
  v.req("created_at", x.created_at);
  v.req("state", x.state);
  v.req("attempts", x.attempts);
  v.opt("next_at", x.next_at);
  v.opt("delivered_at", x.delivered_at);
  v.opt("last_status", x.last_status);
  v.opt("last_error", x.last_error, spec{.max_len = 1024});
}

template <class V, class X>
  requires is<X, audit_checkpoint>
void describe(V& v, X& x) {
  v.req("seq", x.seq);
  v.req("hash", x.hash, hex_hash);
  v.req("at", x.at);
  v.req("signature", x.signature, short_text);
}

template <class V, class X>
  requires is<X, audit_verification>
void describe(V& v, X& x) {
  v.req("ok", x.ok);
  v.req("rows", x.rows);
  v.opt("bad_seq", x.bad_seq);
  v.opt("reason", x.reason);
  v.def("checkpoints", x.checkpoints);
  v.def("checkpoints_verified", x.checkpoints_verified);
  v.opt("anchored_seq", x.anchored_seq);
}

template <class V, class X>
  requires is<X, created_key>
void describe(V& v, X& x) {
  describe(v, x.info);
  v.req("key", x.key, short_text);
}

constexpr spec pem_text{.max_len = 32 * 1024};

template <class V, class X>
  requires is<X, enroll_token_request>
void describe(V& v, X& x) {
  v.def("tags", x.tags, tag_list);
  v.def("ttl_s", x.ttl_s);
}

template <class V, class X>
  requires is<X, enroll_token>
void describe(V& v, X& x) {
  v.req("machine_id", x.machine_id, id);
  v.req("token", x.token, short_text);
  v.req("expires_at", x.expires_at);
}

template <class V, class X>
  requires is<X, enroll_request>
void describe(V& v, X& x) {
  v.req("machine_id", x.machine_id, id);
  v.req("token", x.token, short_text);
  v.req("csr", x.csr, pem_text);
}

template <class V, class X>
  requires is<X, certificate_request>
void describe(V& v, X& x) {
  v.req("csr", x.csr, pem_text);
}

template <class V, class X>
  requires is<X, issued_certificate>
void describe(V& v, X& x) {
  v.req("machine_id", x.machine_id, id);
  v.req("serial", x.serial, hex_hash);
  v.req("certificate", x.certificate, pem_text);
  v.req("ca_chain", x.ca_chain, pem_text);
  v.req("not_before", x.not_before);
  v.req("not_after", x.not_after);
}

template <class V, class X>
  requires is<X, error_body>
void describe(V& v, X& x) {
  v.req("error", x.error, short_text);
  v.req("message", x.message);
}


// ---------------------------------------------------------------------------------------

std::string_view to_string(activation_mode v) noexcept { return enum_to_string(v); }
std::string_view to_string(report_kind v) noexcept { return enum_to_string(v); }
std::string_view to_string(probe_status v) noexcept { return enum_to_string(v); }
std::string_view to_string(lifecycle v) noexcept { return enum_to_string(v); }
std::string_view to_string(role v) noexcept { return enum_to_string(v); }
std::string_view to_string(failure_action v) noexcept { return enum_to_string(v); }
std::string_view to_string(rollout_status v) noexcept { return enum_to_string(v); }
std::string_view to_string(wave_status v) noexcept { return enum_to_string(v); }
std::string_view to_string(host_state v) noexcept { return enum_to_string(v); }
std::string_view to_string(delivery_state v) noexcept { return enum_to_string(v); }

std::string size_spec::to_string() const {
  return std::to_string(value) + (kind == unit::percent ? "%" : "");
}

std::uint64_t size_spec::resolve(std::uint64_t total) const noexcept {
  if (kind == unit::count) return std::min<std::uint64_t>(value, total);
  return (total * value + 99) / 100;
}

boost::system::result<size_spec> parse_size_spec(std::string_view s) {
  const boost::system::error_code bad = errc::invalid_size_spec;
  size_spec out;
  if (s.ends_with('%')) {
    out.kind = size_spec::unit::percent;
    s.remove_suffix(1);
  }
  if (s.empty() || s.size() > 7) return bad;
  std::uint32_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return bad;
    n = n * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (s.size() > 1 && s.front() == '0') return bad;
  if (out.kind == size_spec::unit::percent ? n > 100 : n > 1000000) return bad;
  out.value = n;
  return out;
}

template <wire_type T>
decoded<T> from_json(const boost::json::value& v) {
  std::optional<decode_error> err;
  T out{};
  decoder d(v, nullptr, err);
  if (d.ok()) describe(d, out);
  if (err) return *err;
  return out;
}

template <wire_type T>
decoded<T> parse(std::string_view text) {
  constexpr std::size_t most =
      std::is_same_v<T, release> || std::is_same_v<T, release_request> ? limits::max_release_bytes : limits::max_body_bytes;
  if (text.size() > most) return decode_error{errc::too_long, {}, "body larger than " + std::to_string(most) + " bytes"};
  boost::json::parse_options opts;
  opts.max_depth = 32;
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec, {}, opts);
  if (ec) return decode_error{errc::invalid_json, {}, "malformed JSON: " + ec.message()};
  return from_json<T>(v);
}

template <wire_type T>
boost::json::value to_json(const T& v) {
  return encoder::write(v);
}

template <wire_type T>
std::string serialize(const T& v) {
  return boost::json::serialize(to_json(v));
}

#define NIXFLEET_INSTANTIATE(T)                                  \
  template decoded<T> from_json<T>(const boost::json::value&);   \
  template decoded<T> parse<T>(std::string_view);                \
  template boost::json::value to_json<T>(const T&);              \
  template std::string serialize<T>(const T&);

NIXFLEET_INSTANTIATE(desired_state)
NIXFLEET_INSTANTIATE(probe_result)
NIXFLEET_INSTANTIATE(health_report)
NIXFLEET_INSTANTIATE(report)
NIXFLEET_INSTANTIATE(probe_evidence)
NIXFLEET_INSTANTIATE(forensics_bundle)
NIXFLEET_INSTANTIATE(webhook_request)
NIXFLEET_INSTANTIATE(webhook_info)
NIXFLEET_INSTANTIATE(webhook_delivery)
NIXFLEET_INSTANTIATE(report_batch)
NIXFLEET_INSTANTIATE(report_ack)
NIXFLEET_INSTANTIATE(release_entry)
NIXFLEET_INSTANTIATE(release_request)
NIXFLEET_INSTANTIATE(release)
NIXFLEET_INSTANTIATE(release_change)
NIXFLEET_INSTANTIATE(release_diff)
NIXFLEET_INSTANTIATE(rollout_target)
NIXFLEET_INSTANTIATE(rollout_request)
NIXFLEET_INSTANTIATE(rollout_host)
NIXFLEET_INSTANTIATE(rollout_wave)
NIXFLEET_INSTANTIATE(rollout_event)
NIXFLEET_INSTANTIATE(rollout_detail)
NIXFLEET_INSTANTIATE(resume_request)
NIXFLEET_INSTANTIATE(confirmed_generation)
NIXFLEET_INSTANTIATE(machine_status)
NIXFLEET_INSTANTIATE(machine_update)
NIXFLEET_INSTANTIATE(rollback_request)
NIXFLEET_INSTANTIATE(audit_event)
NIXFLEET_INSTANTIATE(key_request)
NIXFLEET_INSTANTIATE(api_key_info)
NIXFLEET_INSTANTIATE(created_key)
NIXFLEET_INSTANTIATE(enroll_token_request)
NIXFLEET_INSTANTIATE(enroll_token)
NIXFLEET_INSTANTIATE(enroll_request)
NIXFLEET_INSTANTIATE(certificate_request)
NIXFLEET_INSTANTIATE(issued_certificate)
NIXFLEET_INSTANTIATE(audit_verification)
NIXFLEET_INSTANTIATE(audit_checkpoint)
NIXFLEET_INSTANTIATE(error_body)
NIXFLEET_INSTANTIATE(rollback_statement)
NIXFLEET_INSTANTIATE(revocation_list)
#undef NIXFLEET_INSTANTIATE

}  // namespace nixfleet::protocol
