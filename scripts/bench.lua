-- wrk script for `make bench`: unique sylk wake-up requests to /push.
-- env: BENCH_APPS (apps to spread over), BENCH_PLATFORM, BENCH_RATE (0 = flat
-- out; else requests/s over all threads), BENCH_IDS (file prefix for the
-- call-ids answered 200), BENCH_THREADS, BENCH_RUN (tags the call-ids of one run),
-- BENCH_MODE (push; v2-register: a new device per request; v2-push: calls to
-- the accounts push-0 .. push-<BENCH_ACCOUNTS - 1>@example.com).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  apps = tonumber(os.getenv("BENCH_APPS") or "3")
  platform = os.getenv("BENCH_PLATFORM") or "apple"
  run = os.getenv("BENCH_RUN") or "0"
  local rate = tonumber(os.getenv("BENCH_RATE") or "0")
  nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
  mode = os.getenv("BENCH_MODE") or "push"
  accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "1000")
  interval = 0
  if rate > 0 then interval = 1000.0 * nthreads / rate end
  next_slot = 0
  n = 0
  codes = {}
  ids = io.open((os.getenv("BENCH_IDS") or "/tmp/bench-ids") .. "-" .. id, "w")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

-- open-loop pacing: every request of this thread gets the next slot of the schedule
function delay()
  if interval == 0 then return 0 end
  local now = now_ms()
  if next_slot < now then next_slot = now end
  local wait = next_slot - now
  next_slot = next_slot + interval
  return wait
end

function request()
  n = n + 1
  local call = string.format("bench-%s-%d-%d@example.com", run, id, n)
  if mode == "v2-register" then
    -- a new device of a new account each time
    local body = string.format(
      '{"app-id":"com.example.bench0","platform":"apple","token":"%032x%032x","device-id":"dev-%d-%d"}',
      id, n, id, n)
    return wrk.format(nil, string.format("/v2/tokens/reg-%s-%d-%d@example.com", run, id, n), nil, body)
  elseif mode == "v2-push" then
    -- a call to one of the accounts prepared beforehand
    local body = string.format(
      '{"event":"incoming_session","call-id":"%s","from":"alice@example.com","from-display-name":"Alice",' ..
      '"to":"bob@example.com","media-type":"audio"}', call)
    local account = (n * nthreads + id) % accounts
    return wrk.format(nil, string.format("/v2/tokens/push-%d@example.com/push", account), nil, body)
  end
  local body = string.format(
    '{"app-id":"com.example.bench%d","platform":"%s","token":"%032x%032x","device-id":"dev-%d",' ..
    '"call-id":"%s","from":"alice@example.com","from-display-name":"Alice","to":"bob@example.com",' ..
    '"media-type":"audio","event":"incoming_session","silent":true}',
    n % apps, platform, id, n, n, call)
  return wrk.format(nil, "/push", nil, body)
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  if status == 200 then
    local call = string.match(body, '"call_id": *"([^"]+)"')
    if call then ids:write(call, "\n") end
  end
end

function done(summary, latency, requests)
  local out = {}
  for _, thread in ipairs(threads) do
    -- codes are per thread: fetch them through the thread's state
    local c = thread:get("codes")
    for code, count in pairs(c) do out[code] = (out[code] or 0) + count end
  end
  local parts = {}
  for code, count in pairs(out) do table.insert(parts, string.format('"%d":%d', code, count)) end
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"codes":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, table.concat(parts, ",")))
end
