-- Replays pre-signed requests, each once: thread i of n takes every n-th line of the file.
local requests = {}
local position = 0

function setup(thread)
  local index = (thread_count or 0)
  thread:set("index", index)
  thread_count = index + 1
end

function init(args)
  local file = io.open(args[1], "r")
  local number = 0
  local threads = tonumber(args[2])
  for line in file:lines() do
    if number % threads == index then
      local fields = {}
      for field in string.gmatch(line, "[^\t]+") do table.insert(fields, field) end
      local headers = {}
      for i = 2, #fields do
        local name, value = string.match(fields[i], "^([^:]+): (.*)$")
        headers[name] = value
      end
      table.insert(requests, wrk.format("GET", fields[1], headers))
    end
    number = number + 1
  end
  file:close()
end

function request()
  position = position + 1
  if position > #requests then
    wrk.thread:stop()
    return requests[#requests]
  end
  return requests[position]
end

function response(status, headers, body)
  if status ~= 200 then failures = (failures or 0) + 1; if failures < 3 then io.stderr:write(status .. " " .. body .. "\n") end end
end
