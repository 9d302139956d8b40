-- POST of a new session per request, each for a distinct device: phone +1 PP T NNNNNNNN (PP: the scenario's
-- prefix from QOD_BENCH_PREFIX, T: wrk thread, N: a per-thread counter). QOD_BENCH_SURFACE is v0 or v1;
-- QOD_BENCH_URL is the notificationUrl / sink (a local receiver answering 204).
dofile(string.match(debug.getinfo(1, "S").source, "^@(.*/)") .. "report.lua")

local prefix = os.getenv("QOD_BENCH_PREFIX") or "10"
local surface = os.getenv("QOD_BENCH_SURFACE") or "v0"
local url = os.getenv("QOD_BENCH_URL") or "http://127.0.0.1:9/cb"
local duration = os.getenv("QOD_BENCH_DURATION") or "86400"
local counter = 0
local path, template

wrk.headers["Content-Type"] = "application/json"
if surface == "v1" then
   path = "/quality-on-demand/v1/sessions"
   template = '{"device":{"phoneNumber":"%s"},"applicationServer":{"ipv4Address":"198.51.100.10"},' ..
              '"qosProfile":"QOS_L","duration":' .. duration .. ',"sink":"' .. url .. '"}'
else
   path = "/camara/qod/v0/sessions"
   template = '{"device":{"phoneNumber":"%s"},"qosProfile":"QOS_L","duration":' .. duration ..
              ',"webhook":{"notificationUrl":"' .. url .. '"}}'
end

function request()
   counter = counter + 1
   local phone = string.format("+1%s%d%08d", prefix, tid % 10, counter)
   return wrk.format("POST", path, nil, string.format(template, phone))
end

function response(status, headers, body)
   count_status(status)
end
