-- Loaded before every row's request.lua (by bench.lua under wrk, by dump.lua under luajit).
-- BENCH_ROWS names a CSV file of request rows (8 numbers a line; 1 or 1000 lines). A request.lua sets
-- wrk.path, wrk.body and any extra wrk.headers from ROWS with the helpers below.
ROWS = {}
for line in io.lines(os.getenv("BENCH_ROWS") or error("BENCH_ROWS is not set")) do
  if line ~= "" then ROWS[#ROWS + 1] = line end
end
NROWS = #ROWS
NFEAT = 8

-- [a,b,...]: the first row
function row_json() return "[" .. ROWS[1] .. "]" end
-- [[a,b,...],[...],...]: every row
function rows_json() return "[[" .. table.concat(ROWS, "],[") .. "]]" end
-- a,b,...: every row, row-major, for flat tensors
function flat_csv() return table.concat(ROWS, ",") end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
