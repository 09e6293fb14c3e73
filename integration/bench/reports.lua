-- wrk script: POST report batches of $BATCH heartbeats for 100 machines per thread, sequence
-- numbers rising per machine, as agents send them.
local batch = tonumber(os.getenv("BATCH") or "1")
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  n = 0
end

function request()
  n = n + 1
  local machine = "bench-" .. tid .. "-" .. (n % 100)
  local reports = {}
  for i = 1, batch do
    local seq = n * batch + i
    reports[i] = string.format('{"seq":%d,"at":"2026-11-26T00:00:00.000Z","kind":"heartbeat",' ..
      '"current_path":"/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-bench",' ..
      '"agent_version":"bench","uptime_s":%d}', seq, seq)
  end
  local body = '{"reports":[' .. table.concat(reports, ",") .. ']}'
  return wrk.format("POST", "/api/v1/machines/" .. machine .. "/reports",
    { ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
  io.write(string.format("reports_per_s %.0f non_2xx_or_errors %d p99_ms %.2f\n",
    summary.requests / (summary.duration / 1e6) * batch, errors, latency:percentile(99) / 1000))
end
