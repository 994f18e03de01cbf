-- wrk script: MCP requests on either protocol path, checked, with a JSON summary.
--
-- Usage: wrk ... -s bench/wrk/mcp.lua URL -- PATH METHOD [TOOL] [SESSIONS_FILE]
--   PATH           2025-11-25 (session-bound) or 2026-07-28 (self-contained requests)
--   METHOD         tools/call or tools/list
--   TOOL           the tool tools/call names ("add", "noop_add"); "-" for tools/list
--   SESSIONS_FILE  2025-11-25 only: one Mcp-Session-Id per line, made by the harness
--                  (initialize + notifications/initialized) before wrk starts
--
-- Each thread numbers its requests so that ids are unique across threads: two requests
-- in flight on one session must not share a JSON-RPC id. On the 2025-11-25 path the id
-- also picks the session, so consecutive requests rotate over every session.
--
-- A response counts as an error unless it is HTTP 200, carries a JSON-RPC "result" and
-- is not a tool error ("isError":true). done() prints one line, "BENCH_JSON {...}", that
-- the harness parses; latencies there are in microseconds. Body bytes are summed here
-- because wrk's own byte count includes responses still arriving when the run ends.

local threads = {}
local thread_count = 0

-- Ids advance by this stride per thread; wrk starts each thread before the next one is
-- set up, so the number of threads is not known when a thread starts numbering.
local ID_STRIDE = 256

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local function read_lines(path)
   local lines = {}
   local file = assert(io.open(path, "r"), "cannot open sessions file " .. path)
   for line in file:lines() do
      if #line > 0 then
         table.insert(lines, line)
      end
   end
   file:close()
   return lines
end

function init(args)
   protocol = args[1]
   method = args[2]
   tool = args[3] or "-"
   sessions = {}
   if protocol == "2025-11-25" then
      sessions = read_lines(assert(args[4], "the 2025-11-25 path needs a sessions file"))
      assert(#sessions > 0, "the sessions file is empty")
   elseif protocol ~= "2026-07-28" then
      error("unknown protocol path " .. tostring(protocol))
   end
   counter = 0
   bad = 0
   body_bytes = 0
   responses = 0
   bad_status = 0
   last_bad = ""

   -- Everything but the id (and, on 2025-11-25, the session) is fixed: build it once.
   local params
   if method == "tools/call" then
      params = '{"name":"' .. tool .. '","arguments":{"a":1,"b":2}'
   else
      params = '{'
   end
   if protocol == "2026-07-28" then
      if params ~= "{" then
         params = params .. ","
      end
      params = params .. '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
         .. '"io.modelcontextprotocol/clientCapabilities":{}}'
   end
   params = params .. "}"
   body_head = '{"jsonrpc":"2.0","id":'
   body_tail = ',"method":"' .. method .. '","params":' .. params .. "}"

   headers = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["MCP-Protocol-Version"] = protocol,
      -- The harness's bearer key: mcphost authenticates every request with it.
      ["Authorization"] = assert(os.getenv("BENCH_AUTHORIZATION"), "BENCH_AUTHORIZATION is not set"),
   }
   if protocol == "2026-07-28" then
      -- The modern path requires routing headers that match the body.
      headers["Mcp-Method"] = method
      if method == "tools/call" then
         headers["Mcp-Name"] = tool
      end
   end
end

function request()
   local id = counter * ID_STRIDE + thread_index + 1
   counter = counter + 1
   if #sessions > 0 then
      headers["Mcp-Session-Id"] = sessions[(id % #sessions) + 1]
   end
   return wrk.format("POST", nil, headers, body_head .. id .. body_tail)
end

function response(status, resp_headers, body)
   responses = responses + 1
   body_bytes = body_bytes + #(body or "")
   if status ~= 200 then
      bad = bad + 1
      bad_status = status
      last_bad = body or ""
   elseif not body or not body:find('"result"', 1, true) or body:find('"isError":true', 1, true) then
      bad = bad + 1
      last_bad = body or ""
   end
end

local function json_string(s)
   s = string.sub(s or "", 1, 300)
   s = s:gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("[%c]", " ")
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local bad_total, status, sample, body_total, response_total = 0, 0, "", 0, 0
   for _, t in ipairs(threads) do
      bad_total = bad_total + (t:get("bad") or 0)
      body_total = body_total + (t:get("body_bytes") or 0)
      response_total = response_total + (t:get("responses") or 0)
      local s = t:get("bad_status") or 0
      if s ~= 0 then
         status = s
      end
      local b = t:get("last_bad") or ""
      if #b > 0 then
         sample = b
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"responses":%d,"body_bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"bad_response":%d},'
         .. '"bad_status":%d,"bad_sample":%s,'
         .. '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.requests, summary.duration, summary.bytes, response_total, body_total,
      e.connect, e.read, e.write, e.status, e.timeout, bad_total,
      status, json_string(sample),
      latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
