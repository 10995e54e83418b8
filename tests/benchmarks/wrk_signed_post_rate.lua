-- wrk_signed_post.lua at a constant rate (open loop), as webhooks arrive from Meta: args after --: bodies file,
-- threads, requests per second per thread. Each thread sends on a fixed schedule; a send the schedule found no free
-- connection for is "late" (it would be coordinated omission): the totals are printed, and should be 0.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_signed_post.lua")

local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } lw_timespec; int clock_gettime(int, lw_timespec *); ]]
local now_ts = ffi.new("lw_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, now_ts)  -- CLOCK_MONOTONIC
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

local threads = {}
local base_setup, base_init = setup, init
local interval, first, slot = 1, nil, 0
late, worst = 0, 0

function setup(thread)
  base_setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  base_init(args)
  interval = 1000 / tonumber(args[3])
end

function delay()
  local now = now_ms()
  if first == nil then first = now end
  local wait = first + slot * interval - now
  slot = slot + 1
  if wait < -1 then
    late = late + 1
    if -wait > worst then worst = -wait end
  end
  return wait > 0 and math.floor(wait + 0.5) or 0
end

function done(summary, latency, requests)
  local count, max = 0, 0
  for _, thread in ipairs(threads) do
    count = count + thread:get("late")
    max = math.max(max, thread:get("worst"))
  end
  io.write(string.format("Late sends: %d, worst %.1fms\n", count, max))
end
