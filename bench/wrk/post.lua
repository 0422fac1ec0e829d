-- wrk script for the benchmark: POST (or GET) a body read from a file, print one JSON summary line.
-- Usage: wrk -t1 -c64 -d3s -s bench/wrk/post.lua URL -- METHOD BODY_FILE [Header: value]...
-- A body containing __N__ is sent with __N__ replaced by a request counter, so that no two requests
-- of one run are alike (a cache that is on then misses on every request).
local req
local method, headers, body
local n = 0

function init(args)
  method = args[1] or "POST"
  if args[2] and args[2] ~= "-" then
    local f = assert(io.open(args[2], "rb"))
    body = f:read("*a")
    f:close()
  end
  headers = {}
  for i = 3, #args do
    local k, v = args[i]:match("^([^:]+):%s*(.*)$")
    if k then headers[k] = v end
  end
  if body then headers["Content-Type"] = headers["Content-Type"] or "application/json" end
  if not (body and body:find("__N__", 1, true)) then
    req = wrk.format(method, nil, headers, body)
  end
end

function request()
  if req then return req end
  n = n + 1
  return wrk.format(method, nil, headers, (body:gsub("__N__", tostring(n))))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
