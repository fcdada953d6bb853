"""``tabserve serve --ray``: the command a user runs, as a process, on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from tabserve.cli import main
from tests.servers import running_server


@pytest.mark.slow
def test_serve_ray_answers_v1_and_v2_then_stops_cleanly_on_sigterm(ray_address, demo_bundle, demo_model):
    # The CLI joins the test's Ray instance ($RAY_ADDRESS) instead of starting a second one.
    with running_server(str(demo_bundle), "--ray", "--replicas", "1", env={"RAY_ADDRESS": ray_address},
                        timeout=120) as base:
        r = httpx.post(f"{base}/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]}, timeout=10)
        assert r.status_code == 200
        assert r.json()["prediction"] == demo_model.predict([[0.1, 0.2, 0.3, 0.4, 0.5]])[0]
        body = {"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP64", "data": [0.1, 0.2, 0.3, 0.4, 0.5]}]}
        assert httpx.post(f"{base}/v2/models/demo/infer", json=body, timeout=10).json()["outputs"][0]["data"] == [
            r.json()["prediction"]]
    assert running_server.last_exit_code == 0
    assert "with Ray Serve on http://127.0.0.1" in running_server.last_output


@pytest.mark.parametrize(("args", "message"), [
    (["--replicas", "2", "--autoscale", "1:3"], "--replicas and --autoscale exclude each other"),
    (["--autoscale", "3"], "--autoscale takes MIN:MAX replicas"),
    (["--autoscale", "3:1"], "--autoscale takes MIN:MAX replicas"),
    (["--replicas", "0"], "--replicas must be at least 1"),
    (["--workers", "2"], "with --ray, ask for --replicas N"),
])
def test_bad_ray_flags_are_refused_before_ray_starts(demo_bundle, capsys, args, message):
    assert main(["serve", str(demo_bundle), "--ray", *args]) == 2
    assert message in capsys.readouterr().err
