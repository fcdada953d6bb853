-- seed-compatible v1: {"data":[8 floats]} -> /api/v1/predict ; {"data":[[...],...]} -> /api/v1/predict/batch
if NROWS == 1 then
  wrk.path = "/api/v1/predict"
  wrk.body = '{"data":' .. row_json() .. '}'
else
  wrk.path = "/api/v1/predict/batch"
  wrk.body = '{"data":' .. rows_json() .. '}'
end
