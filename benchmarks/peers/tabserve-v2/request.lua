-- Open Inference Protocol v2, JSON tensor [N, 8] FP64
wrk.path = "/v2/models/rf/infer"
wrk.body = '{"inputs":[{"name":"X","shape":[' .. NROWS .. ',8],"datatype":"FP64","data":[' .. flat_csv() .. ']}]}'
