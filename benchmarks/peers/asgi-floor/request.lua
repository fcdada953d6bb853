-- The hand-rolled app's API: {"features":[8 numbers]} -> /predict; {"instances":[[...],...]} -> /predict_batch
if NROWS == 1 then
  wrk.path = "/predict"
  wrk.body = '{"features":' .. row_json() .. '}'
else
  wrk.path = "/predict_batch"
  wrk.body = '{"instances":' .. rows_json() .. '}'
end
