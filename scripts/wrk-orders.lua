-- wrk's orders for POST /v1/orders, used by `tandem-bench node` and
-- scripts/bench-loadgen.sh: limit orders on both sides of 100 over 16
-- markets and 256 accounts, so a share of them cross. Ids are unique per
-- run (the script's first argument, after wrk's `--`), per wrk thread and
-- per request.
--
-- The request's head is made once; each request formats only its body and
-- its length. (`wrk.format` per request, which builds the head from a
-- table each time, cost wrk about 1 us more an order on this machine:
-- CPU the client then took from the node on the same two cores.)
local t = 0
function setup(thread) thread:set("tid", t); t = t + 1 end
function init(args)
  n = 0
  run = args[1] or tostring(os.time())
  head = "POST /v1/orders HTTP/1.1\r\nHost: " .. (wrk.headers["Host"] or wrk.host) ..
    "\r\nContent-Type: application/json\r\nContent-Length: "
end
local fmt = string.format
local place = '{"market":"W%d","id":"w%s-%d-%d","account":"wa%d","side":"%s","type":"limit","price":"%d","qty":"%d","tif":"gtc"}'
request = function()
  n = n + 1
  local k = n * 7919 + tid * 104729
  local side = (k % 2 == 0) and "buy" or "sell"
  local off = (k % 9) - 3
  local price = (side == "buy") and (100 + off) or (101 - off)
  local body = fmt(place, k % 16, run, tid, n, k % 256, side, price, 1 + (k % 50))
  return head .. #body .. "\r\n\r\n" .. body
end
