// Nix commands and switch-to-configuration, through nixfleet::process (argv only, timeouts).
#include "nixfleet/agent/io/nix.hpp"

#include "nixfleet/common/process.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>

#include <sys/statvfs.h>
#include <unistd.h>

extern char** environ;

namespace nixfleet::agent::io {
namespace {

std::string tail_of(const process::result& r) {
  std::string t = r.err_tail;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  if (const auto nl = t.rfind('\n', t.size() > 400 ? t.size() - 400 : 0); t.size() > 400 && nl != std::string::npos)
    t = t.substr(nl + 1);
  return t;
}

step_result failed(const std::string& what, const process::result& r) {
  auto msg = what + " " + r.describe();
  if (auto t = tail_of(r); !t.empty()) msg += ": " + t;
  return {false, msg};
}

}  // namespace

std::string nix_config_for(const nix_settings& s) {
  std::string keys;
  for (const auto& k : s.cache_public_keys) keys += (keys.empty() ? "" : " ") + k.to_string();
  // Every setting that could let an unsigned path in is forced here, whatever nix.conf says.
  return "experimental-features = nix-command\n"
         "flake-registry =\n"
         "require-sigs = true\n"
         "substituters =\n"
         "trusted-substituters =\n"
         "trusted-public-keys = " + keys + "\n";
}

boost::asio::awaitable<step_result> nix_cli::fetch(std::string store_path, std::vector<std::string> cache_urls) {
  // Validated again here: nothing unchecked reaches argv.
  if (protocol::check_store_path(store_path)) co_return step_result{false, "refusing an invalid store path"};

  struct statvfs st {};
  if (::statvfs(settings_.store_dir.c_str(), &st) == 0) {
    const auto free_mb = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize / (1024 * 1024);
    if (free_mb < settings_.min_free_mb)
      co_return step_result{false, "only " + std::to_string(free_mb) + " MiB free in " + settings_.store_dir.string() +
                                       ", need " + std::to_string(settings_.min_free_mb)};
  }

  // The host's own caches first, then those the (signed) release names — only over HTTP(S) or
  // S3 and without store parameters. Each is a `nix copy --from` source with signatures required:
  // no URL ever becomes a substituter, where `?trusted=1` would switch the checks off.
  std::vector<std::string> sources;
  std::string errors;
  auto note = [&](const std::string& e) { errors += (errors.empty() ? "" : "; ") + e; };
  for (const auto& u : settings_.caches)
    if (!protocol::check_local_cache_url(u)) sources.push_back(u);
  for (const auto& u : cache_urls) {
    if (protocol::check_fetchable_cache_url(u)) {
      note("ignored a release cache that is not plain http(s) or s3 (store parameters, file and ssh caches belong in "
           "the host's own `caches`)");
      continue;
    }
    if (std::find(sources.begin(), sources.end(), u) == sources.end()) sources.push_back(u);
  }
  for (const auto& cache : sources) {
    process::request req;
    req.argv = {"nix", "copy", "--from", cache, store_path};
    req.env = process::environment_with("NIX_CONFIG", nix_config_for(settings_));
    req.timeout = settings_.fetch_timeout;
    auto r = co_await process::run(std::move(req));
    if (r.ok()) co_return step_result{true, {}};
    note(failed("nix copy --from " + cache, r).error);
  }
  // Last, a path already valid here (preloaded, or left by an earlier fetch).
  process::request req;
  req.argv = {"nix-store", "--realise", store_path};
  req.env = process::environment_with("NIX_CONFIG", nix_config_for(settings_));
  req.timeout = settings_.fetch_timeout;
  auto r = co_await process::run(std::move(req));
  if (r.ok()) co_return step_result{true, {}};
  note(failed("nix-store --realise", r).error);
  co_return step_result{false, errors};
}

boost::asio::awaitable<step_result> nix_cli::set_profile(std::string profile, std::string store_path) {
  if (protocol::check_store_path(store_path)) co_return step_result{false, "refusing an invalid store path"};
  process::request req;
  req.argv = {"nix-env", "-p", profile, "--set", store_path};
  req.env = process::environment_with("NIX_CONFIG", nix_config_for(settings_));
  req.timeout = settings_.command_timeout;
  auto r = co_await process::run(std::move(req));
  if (r.ok()) co_return step_result{true, {}};
  co_return failed("nix-env --set", r);
}

boost::asio::awaitable<step_result> switch_activator::switch_to(std::string store_path, protocol::activation_mode mode) {
  if (protocol::check_store_path(store_path)) co_return step_result{false, "refusing an invalid store path"};
  const auto script = store_path + "/bin/switch-to-configuration";
  const std::string verb(protocol::to_string(mode));
  process::request req;
  if (settings_.how == activation_settings::runner::systemd_run) {
    // A transient unit: the switch survives this agent being restarted by the switch itself.
    req.argv = {"systemd-run", "--collect", "--wait", "--quiet", "--service-type=exec",
                "--unit=nixfleet-switch-" + std::to_string(++switches_), script, verb};
  } else {
    req.argv = {script, verb};
  }
  req.timeout = settings_.timeout;
  req.kill_grace = settings_.kill_grace;
  req.stderr_tail = protocol::limits::max_switch_output_bytes;
  const auto began = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  auto r = co_await process::run(std::move(req));
  auto out = r.ok() ? step_result{true, {}} : failed("switch-to-configuration " + verb, r);
  if (settings_.how == activation_settings::runner::systemd_run) {
    // The switch wrote to its unit's journal, not to us. Since it began: an earlier agent process
    // numbered its units from 1 too.
    process::request j;
    j.argv = {settings_.journalctl, "--no-pager", "--quiet", "-o", "cat", "-n", "200",
              "--since=@" + std::to_string(began.count()), "--unit=nixfleet-switch-" + std::to_string(switches_)};
    j.timeout = std::chrono::seconds(5);
    j.kill_grace = std::chrono::seconds(1);
    j.max_output = 256 * 1024;
    auto jr = co_await process::run(std::move(j));
    out.output = protocol::printable_excerpt(jr.out, protocol::limits::max_switch_output_bytes);
  } else {
    out.output = protocol::printable_excerpt(r.out + r.err_tail, protocol::limits::max_switch_output_bytes);
  }
  co_return out;
}

boost::asio::awaitable<void> switch_activator::wait_for_earlier_switch() {
  if (settings_.how != activation_settings::runner::systemd_run) co_return;
  const auto deadline = std::chrono::steady_clock::now() + settings_.timeout + settings_.kill_grace;
  for (;;) {
    process::request req;
    req.argv = {settings_.systemctl, "list-units", "--plain", "--no-legend", "--no-pager", "--state=activating,active,deactivating",
                "nixfleet-switch-*"};
    req.timeout = std::chrono::seconds(30);
    auto r = co_await process::run(std::move(req));
    if (!r.ok() || r.out.find("nixfleet-switch-") == std::string::npos) co_return;
    if (std::chrono::steady_clock::now() > deadline) co_return;  // recovery decides from what runs
    boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, std::chrono::seconds(1));
    co_await t.async_wait(boost::asio::use_awaitable);
  }
}

std::string switch_activator::running() {
  std::error_code ec;
  auto target = std::filesystem::read_symlink(settings_.current_system, ec);
  return ec ? std::string() : target.string();
}

boost::asio::awaitable<std::vector<protocol::probe_result>> health_prober::round() {
  std::vector<std::string> outputs;
  auto results = co_await health::run_all(setup_->probes, &outputs);
  outputs_ = std::move(outputs);
  co_return results;
}

std::string health_prober::output_of(const std::string& probe) const {
  for (std::size_t i = 0; i < outputs_.size() && i < setup_->probes.size(); ++i)
    if (setup_->probes[i]->common().name == probe) return outputs_[i];
  return {};
}

boost::asio::awaitable<void> steady_clock::sleep_until(core::time_point t) {
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, t);
  co_await timer.async_wait(boost::asio::use_awaitable);
}

}  // namespace nixfleet::agent::io
