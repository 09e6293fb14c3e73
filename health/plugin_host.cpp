// nixfleet-probe-host: loads one probe plugin, runs one check, prints the result as JSON.
// The agent runs this as a child so that a plugin can only ever crash or hang this process.
// Usage: nixfleet-probe-host --plugin /path/to/plugin.so --deadline-ms 5000 < config.json
#include "nixfleet_probe.h"

#include "nixfleet/protocol/validate.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <CLI/CLI.hpp>

#include <dlfcn.h>
#include <iostream>
#include <iterator>
#include <string>
#include <unistd.h>

namespace {

int report(bool passed, std::string message) {
  // Plugins may return anything: keep it short, valid UTF-8 and free of control characters.
  if (message.size() > 1024) message.resize(1024);
  for (auto& c : message)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  if (!nixfleet::protocol::is_valid_utf8(message)) message = "(plugin message is not valid UTF-8)";
  boost::json::object out;
  out["status"] = passed ? "pass" : "fail";
  out["message"] = message;
  std::cout << boost::json::serialize(out) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nixfleet-probe-host: runs one check of a nixfleet probe plugin"};
  std::string plugin;
  std::uint64_t deadline_ms = 10000;
  app.add_option("--plugin", plugin, "absolute path of the plugin shared object")->required();
  app.add_option("--deadline-ms", deadline_ms, "time the check may take")->check(CLI::Range(1, 86400000));
  CLI11_PARSE(app, argc, argv);

  // Never outlive the deadline by much, even if the agent that started us is gone.
  ::alarm(static_cast<unsigned>(deadline_ms / 1000 + 2));

  std::string config(std::istreambuf_iterator<char>(std::cin), {});
  if (config.size() > (1u << 20)) return report(false, "plugin configuration larger than 1 MiB");
  if (config.empty()) config = "{}";

  void* handle = ::dlopen(plugin.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* e = ::dlerror();
    return report(false, std::string("cannot load plugin: ") + (e ? e : "unknown error"));
  }
  auto entry = reinterpret_cast<nixfleet_probe_entry_fn>(::dlsym(handle, NIXFLEET_PROBE_ENTRY_SYMBOL));
  if (entry == nullptr) return report(false, "not a nixfleet probe plugin: no " NIXFLEET_PROBE_ENTRY_SYMBOL " symbol");
  const nixfleet_probe_v1* table = entry();
  if (table == nullptr) return report(false, "plugin returned no probe table");
  if (table->abi_version != NIXFLEET_PROBE_ABI_VERSION)
    return report(false, "plugin ABI version " + std::to_string(table->abi_version) + ", this host speaks " +
                             std::to_string(NIXFLEET_PROBE_ABI_VERSION));
  if (table->struct_size < sizeof(nixfleet_probe_v1) || table->init == nullptr || table->run == nullptr ||
      table->free_result == nullptr || table->destroy == nullptr)
    return report(false, "plugin probe table is incomplete");

  char error[1024] = {0};
  void* state = table->init(config.c_str(), config.size(), error, sizeof error - 1);
  if (state == nullptr) return report(false, std::string("plugin init failed: ") + (error[0] ? error : "no reason given"));

  nixfleet_probe_result result{NIXFLEET_PROBE_FAIL, nullptr};
  const int rc = table->run(state, deadline_ms, &result);
  std::string message = result.message ? std::string(result.message) : std::string();
  const int status = result.status;
  table->free_result(state, &result);
  table->destroy(state);
  if (rc != 0) return report(false, "plugin check failed (code " + std::to_string(rc) + ")" + (message.empty() ? "" : ": " + message));
  if (status != NIXFLEET_PROBE_PASS && status != NIXFLEET_PROBE_FAIL)
    return report(false, "plugin returned an invalid status " + std::to_string(status));
  return report(status == NIXFLEET_PROBE_PASS, message);
}
