// `nixfleet webhooks …`: where the coordinator sends events, and what became of each delivery.
#include "commands_detail.hpp"

#include <boost/json/serialize.hpp>

#include <iostream>

namespace nixfleet::cli::detail {

int webhooks_add(context& ctx, const webhook_opts& o) {
  json::array events;
  std::string_view rest = o.events;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    if (auto e = rest.substr(0, comma); !e.empty()) events.push_back(json::value(e));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  json::object body{{"url", o.url}, {"events", std::move(events)}};
  if (o.secret_file) {
    auto secret = read_secret_file(*o.secret_file, "webhook secret");
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    body["secret"] = secret;
  }
  if (o.description) body["description"] = *o.description;
  auto w = ctx.api().send<protocol::webhook_info>("POST", "/api/v1/webhooks", json::serialize(body));
  if (ctx.s.json) return print_json(protocol::to_json(w)), exit_ok;
  std::cout << w.id << "\n";
  std::cerr << "webhook " << w.id << (w.signed_ ? " (signed)" : " (unsigned: anyone who can reach the receiver can forge one)")
            << " for " << join(w.events) << "\n";
  return exit_ok;
}

int webhooks_list(context& ctx) {
  auto list = ctx.api().get<std::vector<protocol::webhook_info>>("/api/v1/webhooks");
  if (ctx.s.json) return print_json(to_json_array(list)), exit_ok;
  std::vector<std::vector<std::string>> rows;
  for (const auto& w : list)
    rows.push_back({w.id, w.url, join(w.events), w.signed_ ? "yes" : "no", std::to_string(w.pending),
                    w.description.value_or("")});
  print_table(std::cout, {"ID", "URL", "EVENTS", "SIGNED", "PENDING", "DESCRIPTION"}, rows);
  return exit_ok;
}

int webhooks_remove(context& ctx, const std::string& id) {
  require_id(id, "webhook");
  ctx.api().call("DELETE", "/api/v1/webhooks/" + id);
  if (!ctx.s.json) std::cout << "webhook " << id << " removed, with its pending deliveries\n";
  return exit_ok;
}

int webhooks_deliveries(context& ctx, const std::string& id, std::uint32_t limit) {
  require_id(id, "webhook");
  auto list = ctx.api().get<std::vector<protocol::webhook_delivery>>("/api/v1/webhooks/" + id +
                                                                     "/deliveries?limit=" + std::to_string(limit));
  if (ctx.s.json) return print_json(to_json_array(list)), exit_ok;
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : list) {
    std::string when = d.delivered_at ? protocol::format_time(*d.delivered_at)
                       : d.next_at    ? "next " + protocol::format_time(*d.next_at)
                                      : "-";
    rows.push_back({std::to_string(d.id), d.event, protocol::format_time(d.created_at),
                    std::string(protocol::to_string(d.state)), std::to_string(d.attempts), when,
                    d.last_error.value_or(d.last_status ? std::to_string(*d.last_status) : "")});
  }
  print_table(std::cout, {"ID", "EVENT", "CREATED", "STATE", "ATTEMPTS", "DELIVERED / NEXT", "LAST ERROR"}, rows);
  return exit_ok;
}

}  // namespace nixfleet::cli::detail
