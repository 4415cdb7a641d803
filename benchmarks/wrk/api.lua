-- Requests for benchmarks/api.py, and a result line it can parse.
--
--   wrk -s api.lua URL -- post PATH BODY        POST BODY (JSON) to PATH
--   wrk -s api.lua URL -- get PREFIX IDS_FILE   GET PREFIX .. id, an id at random from the file
--
-- done() prints one line: "WRK key=value ...", times in microseconds.

local req = nil
local prefix = nil
local ids = {}

function init(args)
   local mode = args[1]
   if mode == "post" then
      req = wrk.format("POST", args[2], { ["Content-Type"] = "application/json" }, args[3])
   elseif mode == "get" then
      prefix = args[2]
      for line in io.lines(args[3]) do
         if #line > 0 then ids[#ids + 1] = line end
      end
      if #ids == 0 then error("no ids in " .. args[3]) end
      math.randomseed(os.time() + (tonumber(tostring(ids):match("0x(%x+)"), 16) or 0))
   else
      error("usage: wrk -s api.lua URL -- post PATH BODY | get PREFIX IDS_FILE")
   end
end

function request()
   if req then return req end
   return wrk.format("GET", prefix .. ids[math.random(#ids)])
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
      "connect=%d read=%d write=%d status=%d timeout=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
