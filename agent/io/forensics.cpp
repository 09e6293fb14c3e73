// The host's side of forensics.
#include "nixfleet/agent/io/forensics.hpp"

#include "nixfleet/agent/core/forensics.hpp"
#include "nixfleet/common/process.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>

#include <algorithm>

namespace nixfleet::agent::io {
namespace {

using protocol::limits;

// A command's trouble, as one note: "journalctl timed out after 5000 ms".
std::string note_of(const std::string& what, const process::result& r) {
  auto text = what + " " + r.describe();
  if (auto tail = protocol::printable_excerpt(r.err_tail, 120); !tail.empty()) {
    std::replace(tail.begin(), tail.end(), '\n', ' ');
    text += ": " + tail;
  }
  return protocol::printable_excerpt(text, limits::max_short_text_bytes, protocol::keep::head);
}

process::request command(const forensics_settings& s, std::vector<std::string> argv) {
  process::request req;
  req.argv = std::move(argv);
  req.timeout = s.timeout;
  req.kill_grace = std::chrono::seconds(1);
  req.max_output = 1 << 20;
  req.stderr_tail = 512;
  return req;
}

}  // namespace

boost::asio::awaitable<failed_units_snapshot> host_investigator::failed_units() {
  failed_units_snapshot snap;
  if (!settings_.enable) co_return snap;
  std::vector<std::string> argv = {settings_.systemctl, "list-units", "--failed", "--plain", "--no-legend",
                                   "--no-pager", "--full"};
  auto req = command(settings_, std::move(argv));
  req.timeout = std::min(settings_.timeout, settings_.before_rollback_timeout);
  req.kill_grace = std::chrono::milliseconds(500);
  auto r = co_await process::run(std::move(req));
  if (r.ok()) snap.units = core::failed_units_in(r.out);
  else snap.note = note_of("systemctl", r);
  co_return snap;
}

boost::asio::awaitable<protocol::forensics_bundle> host_investigator::investigate(forensics_request q) {
  using namespace boost::asio::experimental::awaitable_operators;
  protocol::forensics_bundle b;
  if (!settings_.enable) co_return b;
  std::vector<std::string> notes;

  // The failed units (unless listed before the rollback) and the closure difference at once; the
  // journal needs the failed units.
  auto list_failed = [&]() -> boost::asio::awaitable<void> {
    failed_units_snapshot snap;  // (no co_await inside a conditional expression: GCC 12 miscompiles it)
    if (q.failed) snap = std::move(*q.failed);
    else snap = co_await failed_units();
    b.failed_units = std::move(snap.units);
    if (!snap.note.empty()) notes.push_back(std::move(snap.note));
  };
  auto closure = [&]() -> boost::asio::awaitable<void> {
    // Checked again here: nothing unchecked reaches argv.
    if (protocol::check_store_path(q.target) || protocol::check_store_path(q.previous) || q.target == q.previous) co_return;
    std::vector<std::string> argv = {settings_.nix, "store", "diff-closures", q.previous, q.target};
    auto req = command(settings_, std::move(argv));
    req.env = process::environment_with("NIX_CONFIG", settings_.nix_config);
    auto r = co_await process::run(std::move(req));
    if (!r.ok()) {
      notes.push_back(note_of("nix store diff-closures", r));
      co_return;
    }
    auto lines = core::closure_diff_lines(r.out, limits::max_closure_diff_lines);
    b.closure_diff = std::move(lines.lines);
    b.closure_changes = lines.total;
    if (r.out_truncated) notes.emplace_back("nix store diff-closures printed more than 1 MiB: the count stops there");
  };
  co_await (list_failed() && closure());

  if (settings_.journal) {
    std::vector<std::string> units = b.failed_units;
    for (auto& u : core::units_in_switch_output(q.switch_output))
      if (std::find(units.begin(), units.end(), u) == units.end()) units.push_back(std::move(u));
    std::erase_if(units, [&](const std::string& u) {
      return std::any_of(settings_.journal_exclude.begin(), settings_.journal_exclude.end(),
                         [&](const std::string& p) { return protocol::glob_match(p, u); });
    });
    if (units.size() > 32) units.resize(32);
    if (!units.empty()) {
      std::vector<std::string> argv = {settings_.journalctl, "--no-pager", "--quiet", "-o", "short-iso",
                                       "-n", std::to_string(settings_.journal_lines)};
      if (q.since) {
        const auto ms = q.since->time_since_epoch().count();
        argv.push_back("--since=@" + std::to_string(ms / 1000));
      }
      for (const auto& u : units) argv.push_back("--unit=" + u);
      auto req = command(settings_, std::move(argv));
      auto r = co_await process::run(std::move(req));
      if (!r.ok()) notes.push_back(note_of("journalctl", r));
      // What a journalctl that timed out did print is still worth having.
      if (!r.out.empty()) b.journal = protocol::printable_excerpt(r.out, limits::max_journal_bytes);
    }
  }
  if (notes.size() > limits::max_forensics_notes) notes.resize(limits::max_forensics_notes);
  b.notes = std::move(notes);
  co_return b;
}

}  // namespace nixfleet::agent::io
