-- A fixed request (method, body and headers from the environment and wrk's -H options): the nginx reference,
-- authenticated GETs and the token endpoint. No response() callback, so wrk stays on its fast path; non-2xx/3xx
-- answers show up in errors.status.
dofile(string.match(debug.getinfo(1, "S").source, "^@(.*/)") .. "report.lua")

wrk.method = os.getenv("QOD_BENCH_METHOD") or "GET"
local body = os.getenv("QOD_BENCH_BODY")
if body and body ~= "" then
   wrk.body = body
   wrk.headers["Content-Type"] = os.getenv("QOD_BENCH_CTYPE") or "application/x-www-form-urlencoded"
end
