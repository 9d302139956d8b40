-- The full lifecycle mix: each session is created (POST), read three times (GET) and deleted (DELETE), all on the
-- v0 API. wrk does not say which connection a response came from, so the script keeps a per-thread queue of created
-- sessions and their remaining steps: request() takes the next step of the queue's head (and puts the session back
-- at the tail while steps remain) or, when the queue is empty, creates a new session. With 64 connections the queue
-- holds dozens of sessions, so consecutive steps of one session are many requests apart and in practice sequential.
dofile(string.match(debug.getinfo(1, "S").source, "^@(.*/)") .. "report.lua")

local prefix = os.getenv("QOD_BENCH_PREFIX") or "30"
local url = os.getenv("QOD_BENCH_URL") or "http://127.0.0.1:9/cb"
local base = "/camara/qod/v0/sessions"
local counter = 0
local queue, head, tail = {}, 1, 0 -- entries: {id, steps left}

wrk.headers["Content-Type"] = "application/json"

function request()
   if head <= tail then
      local s = queue[head]
      queue[head] = nil
      head = head + 1
      s[2] = s[2] - 1
      if s[2] > 0 then
         tail = tail + 1
         queue[tail] = s
         return wrk.format("GET", base .. "/" .. s[1], nil, nil)
      end
      return wrk.format("DELETE", base .. "/" .. s[1], nil, nil)
   end
   counter = counter + 1
   local phone = string.format("+1%s%d%08d", prefix, tid % 10, counter)
   return wrk.format("POST", base, nil, string.format(
      '{"device":{"phoneNumber":"%s"},"qosProfile":"QOS_L","duration":86400,"webhook":{"notificationUrl":"%s"}}',
      phone, url))
end

function response(status, headers, body)
   count_status(status)
   if status == 201 then
      local id = string.match(body, '"sessionId":"([%x%-]+)"')
      if id then
         tail = tail + 1
         queue[tail] = {id, 4} -- three GETs, then the DELETE
      end
   end
end
