"""What ``tabserve serve`` and ``tabserve --help`` import: a cold start pays for every module, so training,
registry and data-frame libraries must stay out of a server that answers predictions (issue #17, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from starlette.testclient import TestClient

import tabserve
from tabserve.api.admin_gate import api_routes
from tests.servers import free_port

# Libraries a server that serves an ONNX bundle has no use for: training, the MLflow registry, data frames,
# Parquet, plotting, templates, gRPC (off unless --grpc-port) and WebSockets (no route is one).
NOT_FOR_SERVING = ("pandas", "sklearn", "scipy", "mlflow", "pyarrow", "skl2onnx", "matplotlib", "jinja2", "grpc",
                   "sqlalchemy", "lightgbm", "xgboost", "catboost", "ray", "websockets")

# Runs the real command in a process of its own and, once it has answered a prediction, prints which of the
# packages above it imported.
SERVE_AND_LIST = textwrap.dedent("""
    import json, os, sys, threading, time, urllib.request
    bundle, port, row, names = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

    def first_answer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/predict", data=row.encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    if answer.status == 200:
                        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(names))
                        print(json.dumps({"answered": True, "imported": loaded}), flush=True)
                        os._exit(0)
            except OSError:
                time.sleep(0.05)
        print(json.dumps({"answered": False}), flush=True)
        os._exit(1)

    threading.Thread(target=first_answer, daemon=True).start()
    from tabserve.cli import main
    main(["serve", bundle, "--host", "127.0.0.1", "--port", port, "--workers", "1"])
""")


def _imported_by(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_serving_process_imports_no_training_registry_or_dataframe_library(demo_bundle: Path) -> None:
    row = json.dumps({"data": [0.1, -0.2, 0.3, 0.0, 1.5]})
    done = subprocess.run([sys.executable, "-c", SERVE_AND_LIST, str(demo_bundle), str(free_port()), row,
                           json.dumps(NOT_FOR_SERVING)], check=False, capture_output=True, text=True, timeout=120,
                          env={**_env(), "TABSERVE_ACCESS_LOG": "true", "TABSERVE_METRICS": "true",
                               "TABSERVE_RANGE_POLICY": "warn"})
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["answered"], done.stderr[-2000:]
    assert report["imported"] == []


def test_help_imports_neither_the_model_stack_nor_the_web_stack() -> None:
    heavy = ["numpy", "onnxruntime", "fastapi", "uvicorn", "pandas", "sklearn", "mlflow"]
    for argv, allowed in ((["--help"], set()), (["serve", "--help"], set())):
        code = (f"import contextlib, io, json, sys\nfrom tabserve.cli import main\n"
                f"with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
                f"    main({argv!r})\n"
                f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))")
        assert _imported_by(code) == sorted(allowed), argv
    # and `import tabserve` alone costs nothing either: its public names come at first use
    assert _imported_by("import json, sys, tabserve\nprint(json.dumps(sorted({m.split('.')[0] for m in "
                        f"sys.modules}} & set({heavy + ['pydantic']!r}))))") == []


def test_fastapi_routes_built_at_first_use_are_all_there(demo_model: tabserve.Model) -> None:
    """The routes FastAPI serves (probes, docs, admin) are built at their first use, not at start-up: whatever
    comes first (a prediction, the OpenAPI document, a probe, ``app.routes``), every declared route answers."""
    settings = tabserve.Settings(pretrain=False)
    with TestClient(tabserve.create_app(settings, model=demo_model)) as client:
        assert client.post("/api/v1/predict", json={"data": [0.1, -0.2, 0.3, 0.0, 1.5]}).status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/api/v1/predict", "/readyz", "/v2/models/{model_name}/infer"} <= set(paths)
        assert client.get("/readyz").status_code == 200
        assert client.get("/api/v1/models").status_code == 200
    app = tabserve.create_app(settings, model=demo_model)
    declared = {(r.method, r.path) for r in app.state.routes.routes if r.endpoint is not None}
    assert declared <= {(method, path) for method, path, _ in api_routes(app)}  # app.routes builds them
    with TestClient(tabserve.create_app(settings, model=demo_model)) as client:
        assert client.get("/healthz").status_code == 200  # a probe first
        assert "/api/v1/predict" in client.get("/openapi.json").json()["paths"]


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TABSERVE_")}
