-- wrk script: POST pre-built bodies in turn and print one machine-readable result line.
--
-- wrk -s bench/wrk_bodies.lua URL -- LIST CONTENT_TYPE
--   LIST: a file naming one body file per line; each thread starts at its own offset and
--   cycles through all of them. CONTENT_TYPE: the Content-Type header of every request.
-- done() prints "WRK_RESULT {json}": counts, socket errors, non-2xx answers (counted in
-- response(), per thread) and wrk's own latency percentiles in microseconds.

local threads = {}

function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end

local prepared = {}
local index = 0
non2xx = 0

function init(args)
  local list, content_type = args[1], args[2]
  local headers = { ["Content-Type"] = content_type }
  for path in io.lines(list) do
    local file = assert(io.open(path, "rb"))
    local body = file:read("*a")
    file:close()
    prepared[#prepared + 1] = wrk.format("POST", nil, headers, body)
  end
  assert(#prepared > 0, "no request bodies in " .. list)
  index = ((offset or 0) * 17) % #prepared
end

function request()
  index = index % #prepared + 1
  return prepared[index]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
  end
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  io.write(string.format(
    'WRK_RESULT {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"non2xx":%.0f,'
      .. '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,'
      .. '"latency_us":{"min":%.0f,"mean":%.1f,"max":%.0f,"stdev":%.1f,'
      .. '"p50":%.0f,"p90":%.0f,"p95":%.0f,"p99":%.0f,"p999":%.0f}}\n',
    summary.requests, summary.duration, summary.bytes, bad,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    p(50), p(90), p(95), p(99), p(99.9)))
end
