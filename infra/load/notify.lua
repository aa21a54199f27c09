-- wrk script: POST /api/v1/notifications with a new eventId each time.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  accepted = 0
  other = 0
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"eventId": "load-%d-%d-%d", "userId": "load-user", "category": "orders", "channels": ["push", "email"], "title": "Load", "body": "Notification %d"}',
    id, os.time(), counter, counter)
  return wrk.format("POST", "/api/v1/notifications",
    {["Content-Type"] = "application/json", ["x-api-key"] = os.getenv("LOAD_SERVICE_KEY")}, body)
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    o = o + t:get("other")
  end
  io.write(string.format("accepted=%d other=%d accepted_per_s=%.0f\n",
    a, o, a / (summary.duration / 1e6)))
end
