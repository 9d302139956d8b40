-- Shared by every scenario script (loaded with dofile): per-thread status counters and one machine-readable line
-- printed by done(): "QOD_BENCH_JSON {...}". A scenario script may define bench_setup(thread) and count statuses
-- with count_status(status) from its own response().

local threads = {}
statuses = {}

function count_status(status)
   statuses[status] = (statuses[status] or 0) + 1
end

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
   if bench_setup then
      bench_setup(thread)
   end
end

local function num(x)
   return string.format("%.3f", x)
end

function done(summary, latency, requests)
   local merged = {}
   for _, t in ipairs(threads) do
      local s = t:get("statuses")
      if type(s) == "table" then
         for k, v in pairs(s) do
            merged[k] = (merged[k] or 0) + v
         end
      end
   end
   local parts = {}
   for k, v in pairs(merged) do
      table.insert(parts, string.format('"%s":%d', tostring(k), v))
   end
   local e = summary.errors
   io.write(string.format(
      'QOD_BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"mean":%s,"stdev":%s,"max":%s,"p50":%s,"p75":%s,"p90":%s,"p99":%s,"p999":%s},' ..
      '"statuses":{%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      num(latency.mean), num(latency.stdev), num(latency.max),
      num(latency:percentile(50)), num(latency:percentile(75)), num(latency:percentile(90)),
      num(latency:percentile(99)), num(latency:percentile(99.9)),
      table.concat(parts, ",")))
end
