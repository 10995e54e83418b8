-- Signed Meta deliveries, pre-computed by bench_ingress: one "signature body" per line of the file given after --.
local counter = 0
local requests = {}
local index, step = 0, 1

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  thread:set("nthreads", 0)  -- fixed below, once every thread exists
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local sig, body = line:match("^(%S+) (.*)$")
    requests[#requests + 1] = wrk.format("POST", nil, {["X-Hub-Signature-256"] = sig,
                                                        ["Content-Type"] = "application/json"}, body)
  end
  f:close()
  step = tonumber(args[2]) or 1
  index = tid
end

function request()
  index = index + step
  if index > #requests then index = (index % step) + 1 end
  return requests[index]
end
