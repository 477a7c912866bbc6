-- wrk script for the registry benchmark (bench/registry/run.sh):
--   wrk -t2 -c64 -d5s -s bench/registry/load.lua http://127.0.0.1:PORT -- MODE [MAX]
-- MODE:
--   read      GET /v1/kv/bench/key (the key must exist); every answer must be 200
--   write     PUT /v1/kv/bench/<random key> with a small body; every answer must be 200 "true"
--   register  PUT /v1/agent/service/register with a distinct service ID; every answer must be 200
-- MAX bounds the requests each wrk thread sends (default 1,000,000): a safety net so that a run
-- never writes more than 2*MAX records whatever the speed; when it is reached the thread stops
-- early and done() says so (the rate is then understated, as wrk divides by the whole -d).
-- done() prints "RESULT name=value" lines (rates, wrong answers, latency percentiles in µs) and the
-- first few wrong answers, so a fast run of errors never passes for throughput.

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "read"
  max_requests = tonumber(args[2] or "1000000")
  capped = 0
  n = 0
  answers = 0
  bad = 0          -- status other than 200
  bad_body = 0     -- 200 but not the expected body (writes: "true")
  samples = ""     -- the first wrong answers, for the report
  nsamples = 0
  math.randomseed(os.time() * 1000 + tid)
  if mode == "read" then
    read_request = wrk.format("GET", "/v1/kv/bench/key")
  elseif mode ~= "write" and mode ~= "register" then
    error("unknown mode " .. tostring(mode) .. " (read, write or register)")
  end
end

function request()
  n = n + 1
  if n > max_requests and capped == 0 then
    capped = 1
    wrk.thread:stop()
  end
  if mode == "read" then
    return read_request
  end
  if mode == "write" then
    -- Random and distinct: thread, sequence number and random bits.
    local key = string.format("bench/w/%x%06x-%d-%d", math.random(0, 0xfffffff), math.random(0, 0xffffff), tid, n)
    return wrk.format("PUT", "/v1/kv/" .. key, nil, "value-" .. n)
  end
  local id = string.format("bench-reg-%d-%d", tid, n)
  local body = '{"ID":"' .. id .. '","Name":"bench-reg","Address":"127.0.0.1","Port":' .. (1024 + n % 60000) ..
               ',"Tags":["bench"]}'
  return wrk.format("PUT", "/v1/agent/service/register", {["Content-Type"] = "application/json"}, body)
end

local function sample(status, body)
  if nsamples < 3 then
    nsamples = nsamples + 1
    samples = samples .. string.format("  %d %q\n", status, string.sub(body or "", 1, 200))
  end
end

function response(status, headers, body)
  answers = answers + 1
  if status ~= 200 then
    bad = bad + 1
    sample(status, body)
  elseif mode == "write" and body ~= "true" then
    bad_body = bad_body + 1
    sample(status, body)
  end
end

function done(summary, latency, requests)
  local t_answers, t_bad, t_bad_body, t_samples, t_capped = 0, 0, 0, "", 0
  for _, thread in ipairs(threads) do
    t_capped = t_capped + (thread:get("capped") or 0)
    t_answers = t_answers + (thread:get("answers") or 0)
    t_bad = t_bad + (thread:get("bad") or 0)
    t_bad_body = t_bad_body + (thread:get("bad_body") or 0)
    t_samples = t_samples .. (thread:get("samples") or "")
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  local good = t_answers - t_bad - t_bad_body
  io.write(string.format("RESULT requests=%d\n", summary.requests))
  io.write(string.format("RESULT seconds=%.3f\n", seconds))
  io.write(string.format("RESULT rps=%.0f\n", summary.requests / seconds))
  io.write(string.format("RESULT good_rps=%.0f\n", good / seconds))
  io.write(string.format("RESULT non200=%d\n", t_bad))
  io.write(string.format("RESULT bad_body=%d\n", t_bad_body))
  io.write(string.format("RESULT socket_errors=%d\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("RESULT timeouts=%d\n", e.timeout))
  io.write(string.format("RESULT lat_p50_us=%d\n", latency:percentile(50)))
  io.write(string.format("RESULT lat_p99_us=%d\n", latency:percentile(99)))
  io.write(string.format("RESULT lat_max_us=%d\n", latency.max))
  io.write(string.format("RESULT capped_threads=%d\n", t_capped))
  if t_capped > 0 then
    io.write(string.format("note: %d thread(s) reached the cap of %d requests and stopped early; the rate is understated\n",
                           t_capped, max_requests))
  end
  if t_bad + t_bad_body > 0 then
    io.write(string.format("wrong answers: %d non-200, %d with an unexpected body; first ones:\n", t_bad, t_bad_body))
    io.write(t_samples)
  end
end
