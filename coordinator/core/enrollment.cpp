// The fleet's identities: one-time enrollment tokens, the certificates the fleet CA issued, and
// revocation. Pure: the route makes the token and the certificate; this decides and records.
#include "fleet_detail.hpp"

#include "nixfleet/protocol/signing.hpp"

#include <algorithm>

namespace nixfleet::coordinator::core {

namespace json = boost::json;

namespace {

constexpr long max_live_certificates = 8;

refusal forbidden(std::string code, std::string message) { return {403, std::move(code), std::move(message)}; }

effects refuse(refusal r) {
  effects fx;
  fx.refused = std::move(r);
  return fx;
}

json::array tags_json(const std::vector<std::string>& tags) {
  json::array a;
  for (const auto& t : tags) a.push_back(json::value(t));
  return a;
}

certificate_record record_of(const protocol::issued_certificate& c) {
  return {c.serial, c.machine_id, c.not_before, c.not_after, std::nullopt};
}

const std::vector<std::string>& serials_of(const fleet& f, const std::string& machine_id) {
  static const std::vector<std::string> none;
  auto it = f.serials_of.find(machine_id);
  return it == f.serials_of.end() ? none : it->second;
}

void add_certificate(fleet& f, const certificate_record& c) {
  f.serials_of[c.machine_id].push_back(c.serial);
  f.certificates.emplace(c.serial, c);
}

}  // namespace

bool is_enroll_token_text(std::string_view t) noexcept {
  if (!t.starts_with("nfe_") || t.size() != 4 + 64) return false;
  return std::all_of(t.begin() + 4, t.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::optional<refusal> certificate_refusal(const fleet& f, std::string_view machine_id, std::string_view serial,
                                           timestamp now) {
  if (auto m = f.machines.find(std::string(machine_id)); m != f.machines.end() && m->second.revoked_at)
    return forbidden("revoked", "this machine's access was revoked; it needs a new enrollment token");
  if (serial.empty()) return std::nullopt;
  auto c = f.certificates.find(std::string(serial));
  if (c == f.certificates.end()) return std::nullopt;  // not ours: the operator's own PKI
  if (c->second.machine_id != machine_id)
    return forbidden("bad_client_certificate", "the fleet CA issued this certificate to another machine");
  if (c->second.revoked_at) return forbidden("revoked", "this certificate was revoked");
  if (c->second.not_after <= now)
    return forbidden("certificate_expired", "this certificate has expired; the machine needs a new enrollment token");
  return std::nullopt;
}

std::optional<refusal> enrollment_refusal(const fleet& f, const std::string& token_hash, std::string_view machine_id,
                                          timestamp now) {
  // One answer for every bad token, so that a guess learns nothing about which tokens exist.
  const refusal bad = forbidden("invalid_token", "the enrollment token is unknown, used, expired or for another machine");
  auto t = f.tokens.find(token_hash);
  if (t == f.tokens.end() || t->second.used_at || t->second.expires_at <= now || t->second.machine_id != machine_id)
    return bad;
  return std::nullopt;
}

void revoke_into(fleet& f, machine_record& m, effects& fx, const std::string& actor, timestamp now,
                 const std::string& why) {
  std::uint64_t certificates = 0, tokens = 0;
  for (const auto& serial : serials_of(f, m.id)) {
    auto& c = f.certificates.at(serial);
    if (c.revoked_at) continue;
    c.revoked_at = now;
    fx.changes.certificates.push_back(c);
    ++certificates;
  }
  for (auto& [hash, t] : f.tokens) {
    if (t.machine_id != m.id || t.used_at) continue;
    t.used_at = now;  // a token made before the revocation cannot bring the machine back
    fx.changes.tokens.push_back(t);
    ++tokens;
  }
  m.revoked_at = now;
  fx.changes.audit.push_back({now, actor, "machine.revoked", m.id,
                              json::object{{"why", why}, {"certificates", certificates}, {"tokens", tokens}}});
}

std::optional<timestamp> certificate_expiry(const fleet& f, const std::string& machine_id) {
  std::optional<timestamp> newest;
  for (const auto& serial : serials_of(f, machine_id)) {
    const auto& c = f.certificates.at(serial);
    if (!c.revoked_at && (!newest || c.not_after > *newest)) newest = c.not_after;
  }
  return newest;
}

effects on_create_enroll_token(fleet& f, const std::string& actor, const create_enroll_token& e, timestamp now) {
  if (!is_enroll_token_text(e.secret)) return refuse({400, "invalid_field", "token: not an enrollment token"});
  if (e.body.ttl_s < 60 || e.body.ttl_s > 7 * 24 * 3600)
    return refuse({400, "invalid_field", "ttl_s: from 60 s to 7 days"});
  if (auto m = f.machines.find(e.machine_id);
      m != f.machines.end() && m->second.state == protocol::lifecycle::decommissioned)
    return refuse({409, "decommissioned", "the machine is decommissioned; set it active first"});
  enroll_token_record t{protocol::sha256_hex(e.secret), e.machine_id, e.body.tags, now,
                        now + std::chrono::seconds(e.body.ttl_s), actor, std::nullopt};
  if (f.tokens.contains(t.hash)) return refuse({409, "exists", "this token exists"});
  effects fx;
  fx.changes.tokens.push_back(t);
  fx.changes.audit.push_back({now, actor, "machine.enroll_token_created", e.machine_id,
                              json::object{{"expires_at", protocol::format_time(t.expires_at)},
                                           {"tags", tags_json(t.tags)}}});
  f.tokens.emplace(t.hash, t);
  fx.status = 201;
  fx.reply = protocol::enroll_token{e.machine_id, e.secret, t.expires_at};
  return fx;
}

effects on_enroll_machine(fleet& f, const std::string& actor, const enroll_machine& e, timestamp now) {
  const auto& id = e.issued.machine_id;
  if (auto no = enrollment_refusal(f, e.token_hash, id, now)) return refuse(*no);
  if (f.certificates.contains(e.issued.serial)) return refuse({409, "exists", "a certificate with this serial exists"});
  auto& t = f.tokens.at(e.token_hash);
  effects fx;
  t.used_at = now;
  fx.changes.tokens.push_back(t);
  auto [it, created] = f.machines.try_emplace(id);
  auto& m = it->second;
  if (created) m.id = id;
  if (created || !t.tags.empty()) m.tags = t.tags;
  const bool was_revoked = m.revoked_at.has_value();
  m.revoked_at.reset();
  fx.changes.machines.push_back(m);
  auto c = record_of(e.issued);
  fx.changes.certificates.push_back(c);
  add_certificate(f, c);
  fx.changes.audit.push_back({now, actor, "machine.enrolled", id,
                              json::object{{"serial", c.serial},
                                           {"not_after", protocol::format_time(c.not_after)},
                                           {"token_created_by", t.created_by},
                                           {"readmitted", was_revoked}}});
  fx.republish.push_back(id);
  fx.status = 201;
  fx.reply = e.issued;
  return fx;
}

effects on_renew_certificate(fleet& f, const std::string& actor, const renew_certificate& e, timestamp now) {
  const auto& id = e.issued.machine_id;
  if (auto no = certificate_refusal(f, id, e.presented_serial, now)) return refuse(*no);
  auto m = f.machines.find(id);
  if (m != f.machines.end() && m->second.state == protocol::lifecycle::decommissioned)
    return refuse(forbidden("decommissioned", "a decommissioned machine's certificate is not renewed"));
  if (f.certificates.contains(e.issued.serial)) return refuse({409, "exists", "a certificate with this serial exists"});
  // A host renews about once per two thirds of a lifetime, a few times more when storing one failed:
  // a certificate holder asking in a loop is not a table of certificates without end.
  const auto live = std::count_if(serials_of(f, id).begin(), serials_of(f, id).end(), [&](const std::string& s) {
    const auto& c = f.certificates.at(s);
    return !c.revoked_at && c.not_after > now;
  });
  if (live >= max_live_certificates)
    return refuse({429, "too_many_certificates",
                   "this machine holds " + std::to_string(live) + " unexpired certificates; renew after one expires"});
  effects fx;
  auto c = record_of(e.issued);
  fx.changes.certificates.push_back(c);
  add_certificate(f, c);
  fx.changes.audit.push_back({now, actor, "machine.certificate_renewed", id,
                              json::object{{"serial", c.serial},
                                           {"previous", e.presented_serial},
                                           {"not_after", protocol::format_time(c.not_after)}}});
  fx.reply = e.issued;
  return fx;
}

effects on_revoke_machine(fleet& f, const std::string& actor, const revoke_machine& e, timestamp now) {
  auto it = f.machines.find(e.id);
  const bool has_identity = !serials_of(f, e.id).empty() ||
                            std::any_of(f.tokens.begin(), f.tokens.end(),
                                        [&](const auto& kv) { return kv.second.machine_id == e.id; });
  if (it == f.machines.end() && !has_identity) return refuse({404, "not_found", "no such machine"});
  if (it == f.machines.end()) {  // enrolled never, but a token is out: a record that says revoked
    it = f.machines.try_emplace(e.id).first;
    it->second.id = e.id;
  }
  effects fx;
  revoke_into(f, it->second, fx, actor, now, e.why);
  fx.changes.machines.push_back(it->second);
  fx.reply = status_of(f, it->second);
  return fx;
}

}  // namespace nixfleet::coordinator::core
