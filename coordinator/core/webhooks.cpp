// Webhooks: which hooks exist, and which deliveries a change makes. Pure: the store queues the
// deliveries with the change, the driver sends them (io/webhooks.cpp).
#include "fleet_detail.hpp"

#include "nixfleet/protocol/validate.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>

namespace nixfleet::coordinator::core {

namespace json = boost::json;

namespace {

effects refuse(refusal r) {
  effects fx;
  fx.refused = std::move(r);
  return fx;
}

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.push_back(json::value(s));
  return a;
}

}  // namespace

std::string webhook_event_of(std::string_view action) {
  constexpr std::string_view long_prefix = "rollout.rollout_";
  if (action.starts_with(long_prefix)) return "rollout." + std::string(action.substr(long_prefix.size()));
  return std::string(action);
}

std::vector<delivery_new> deliveries_for(const fleet& f, const std::vector<audit_entry>& audit) {
  std::vector<delivery_new> out;
  if (f.webhooks.empty()) return out;
  for (const auto& a : audit) {
    const auto event = webhook_event_of(a.action);
    std::string body;  // made once per entry, for the hooks that want it
    for (const auto& [id, w] : f.webhooks) {
      const bool wanted = std::any_of(w.info.events.begin(), w.info.events.end(),
                                      [&](const std::string& p) { return protocol::glob_match(p, event); });
      if (!wanted) continue;
      if (body.empty())
        body = json::serialize(json::object{{"event", event},
                                            {"at", protocol::format_time(a.at)},
                                            {"actor", a.actor},
                                            {"target", a.target},
                                            {"detail", a.detail}});
      out.push_back({id, event, body, a.at});
    }
  }
  return out;
}

effects on_add_webhook(fleet& f, const std::string& actor, const add_webhook& e, timestamp now) {
  if (f.webhooks.size() >= max_webhooks)
    return refuse({409, "too_many", "at most " + std::to_string(max_webhooks) + " webhooks; remove one first"});
  if (f.webhooks.contains(e.id)) return refuse({409, "exists", "a webhook with this id exists"});
  webhook_record w;
  w.info.id = e.id;
  w.info.url = e.body.url;
  w.info.events = e.body.events;
  w.info.description = e.body.description;
  w.info.signed_ = e.body.secret.has_value();
  w.info.created_at = now;
  w.info.created_by = actor;
  w.secret = e.body.secret;
  effects fx;
  fx.changes.webhooks.push_back(w);
  // The URL is not in the audit log: a chat service's hook URL is itself a secret.
  json::object detail{{"events", strings(w.info.events)}, {"signed", w.info.signed_}};
  fx.changes.audit.push_back({now, actor, "webhook.added", e.id, std::move(detail)});
  fx.status = 201;
  fx.reply = w.info;
  f.webhooks.emplace(e.id, std::move(w));
  return fx;
}

effects on_remove_webhook(fleet& f, const std::string& actor, const remove_webhook& e, timestamp now) {
  if (f.webhooks.erase(e.id) == 0) return refuse({404, "not_found", "no such webhook"});
  effects fx;
  fx.changes.deleted_webhooks.push_back(e.id);
  fx.changes.audit.push_back({now, actor, "webhook.removed", e.id, json::object{}});
  fx.status = 204;
  return fx;
}

}  // namespace nixfleet::coordinator::core
