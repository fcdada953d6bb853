-- What wrk runs (wrk -s lua/bench.lua): the row's request, then one machine-readable summary line.
dofile((os.getenv("BENCH_LUA_DIR") or error("BENCH_LUA_DIR is not set")) .. "/common.lua")
dofile(os.getenv("BENCH_REQUEST_LUA") or error("BENCH_REQUEST_LUA is not set"))

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SUMMARY {"requests":%d,"duration_us":%d,"non2xx":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
