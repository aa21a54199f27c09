-- wrk script: POST /api/v1/shorten with a distinct long URL each time, and
-- count the answers that are not 201 (wrk's own count covers only >= 400).
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  created = 0
  other = 0
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"longUrl": "https://example.com/load/%d/%d/%d"}', id, os.time(), counter)
  return wrk.format("POST", "/api/v1/shorten", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local c, o = 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    o = o + t:get("other")
  end
  io.write(string.format("created=%d other=%d created_per_s=%.0f\n",
    c, o, c / (summary.duration / 1e6)))
end
