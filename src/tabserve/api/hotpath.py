"""The prediction endpoints dispatched straight from ASGI, ahead of FastAPI's router.

FastAPI's routing and dependency solving cost more than the model itself for a one-row request; these few
POST paths are matched by a dict lookup (v2 by splitting the path) and handled by the same endpoint code
the routes use, so behaviour, errors and the OpenAPI schema stay one. Everything else goes to FastAPI.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from tabserve.api.v1 import V1Endpoints
from tabserve.api.v2 import V2Endpoints
from tabserve.observability.requests import ROUTE

V1_PREDICT = "/api/v1/predict"
V1_BATCH = "/api/v1/predict/batch"


class HotPath:
    def __init__(self, app: ASGIApp, v1: V1Endpoints, v2: V2Endpoints) -> None:
        self.app = app
        self.v1 = v1
        self.v2 = v2

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path = scope["path"]
            if path == V1_PREDICT or path == V1_BATCH:
                scope[ROUTE] = path
                response = await self.v1.handle(scope, receive, path == V1_PREDICT)
                await response(scope, receive, send)
                return
            if path.startswith("/api/v1/models/"):
                target1 = _v1_target(path)
                if target1 is not None:
                    scope[ROUTE] = target1[3]
                    response = await self.v1.handle(scope, receive, target1[2], target1[0], target1[1])
                    await response(scope, receive, send)
                    return
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                target = _v2_target(path)
                if target is not None:
                    scope[ROUTE] = target[2]
                    response = await self.v2.handle_infer(scope, receive, target[0], target[1])
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _v2_target(path: str) -> tuple[str, str | None, str] | None:
    """(model, version, route template) for /v2/models/{m}/infer and /v2/models/{m}/versions/{v}/infer."""
    parts = path.split("/")  # ['', 'v2', 'models', m, 'infer'] or [..., m, 'versions', v, 'infer']
    if len(parts) == 5 and parts[3]:
        return parts[3], None, "/v2/models/{model_name}/infer"
    if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
        return parts[3], parts[5], "/v2/models/{model_name}/versions/{model_version}/infer"
    return None


def _v1_target(path: str) -> tuple[str, str | None, bool, str] | None:
    """(model, version, single, route template) for /api/v1/models/{name}[/versions/{v}]/predict[/batch]."""
    parts = path.split("/")  # ['', 'api', 'v1', 'models', m, 'predict'(, 'batch')] or [..., m, 'versions', v, ...]
    single = parts[-1] == "predict"
    tail = parts[-1:] if single else parts[-2:]
    if not (single or tail == ["predict", "batch"]):
        return None
    head = parts[:len(parts) - len(tail)]
    suffix = "/predict" if single else "/predict/batch"
    if len(head) == 5 and head[4]:
        return head[4], None, single, "/api/v1/models/{name}" + suffix
    if len(head) == 7 and head[5] == "versions" and head[4] and head[6]:
        return head[4], head[6], single, "/api/v1/models/{name}/versions/{version}" + suffix
    return None
