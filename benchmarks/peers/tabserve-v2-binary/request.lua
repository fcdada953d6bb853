-- Open Inference Protocol v2 with Triton's binary tensor extension: a JSON header naming the input, then the
-- [N, 8] FP64 rows as raw little-endian bytes (what tritonclient sends with binary_data=True). The answer is JSON.
local ffi = require("ffi")
local n = NROWS * NFEAT
local values = ffi.new("double[?]", n)
local i = 0
for _, line in ipairs(ROWS) do
  for v in string.gmatch(line, "[^,]+") do values[i] = tonumber(v); i = i + 1 end
end
assert(i == n, "expected " .. n .. " values, read " .. i)
local header = '{"inputs":[{"name":"X","shape":[' .. NROWS .. ',8],"datatype":"FP64","parameters":' ..
               '{"binary_data_size":' .. (n * 8) .. '}}]}'
wrk.path = "/v2/models/rf/infer"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = tostring(#header)
wrk.body = header .. ffi.string(values, n * 8)
