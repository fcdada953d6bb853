-- luajit lua/dump.lua DIR: runs the row's request.lua outside wrk and writes the request it builds
-- (DIR/method, DIR/path, DIR/headers as "name: value" lines, DIR/body), so that the driver's readiness and
-- correctness checks send exactly the bytes wrk will send.
wrk = { method = "GET", path = "/", headers = {}, body = "" }
dofile((os.getenv("BENCH_LUA_DIR") or error("BENCH_LUA_DIR is not set")) .. "/common.lua")
dofile(os.getenv("BENCH_REQUEST_LUA") or error("BENCH_REQUEST_LUA is not set"))
local function write(name, text)
  local f = assert(io.open(arg[1] .. "/" .. name, "wb"))
  f:write(text or "")
  f:close()
end
local headers = {}
for k, v in pairs(wrk.headers) do headers[#headers + 1] = k .. ": " .. v end
write("method", wrk.method)
write("path", wrk.path)
write("headers", table.concat(headers, "\n"))
write("body", wrk.body)
