"""``grpc.health.v1.Health`` beside the inference service: what Kubernetes' native ``grpc:`` probe, grpc-health-probe
and load balancers call. grpcio-health-checking's asyncio servicer, fed from the served models: SERVING when every
served model has a version and the server is not draining (ServerReady's answer), NOT_SERVING otherwise.

Two service names answer: ``""`` (the server) and ``inference.GRPCInferenceService``; any other is NOT_FOUND.
Check reads the models at each call; Watch streams learn of a change within ``POLL_S``. Never authenticated or
rate-limited: a probe sends no metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from grpc_health.v1 import health_pb2 as hpb
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from tabserve.grpc.servicer import SERVICE
from tabserve.serving.facade import ServedModels

POLL_S = 0.5
SERVICES = ("", SERVICE)


class ModelHealth(health_aio.HealthServicer):
    def __init__(self, models: ServedModels) -> None:
        super().__init__()
        self.models = models
        self._poll: asyncio.Task[None] | None = None
        for name in SERVICES:
            self._server_status[name] = self._observed()

    def _observed(self) -> int:
        ready = self.models.ready and not self.models.draining
        return hpb.HealthCheckResponse.SERVING if ready else hpb.HealthCheckResponse.NOT_SERVING

    async def refresh(self) -> None:
        status = self._observed()
        for name in SERVICES:
            if self._server_status.get(name) != status:
                await self.set(name, status)  # ignored once shutting down: NOT_SERVING stays

    async def Check(self, request: hpb.HealthCheckRequest, context: grpc.aio.ServicerContext) -> Any:
        await self.refresh()
        return await super().Check(request, context)

    async def Watch(self, request: hpb.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        """The library's Watch, ended after NOT_SERVING is sent at shutdown: an open stream would otherwise hold
        the server's stop for its whole grace."""
        await self.refresh()
        condition = self._server_watchers[request.service]
        last = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(request.service, hpb.HealthCheckResponse.SERVICE_UNKNOWN)
                    if status != last:
                        await context.write(hpb.HealthCheckResponse(status=status))
                        last = status
                    if self._gracefully_shutting_down:
                        return
                    await condition.wait()
        finally:
            self._server_watchers.pop(request.service, None)

    def serve_on(self, server: Any) -> None:
        """On ``server`` (grpc/http2.py's, or anything that takes grpcio's generic handlers)."""
        health_pb2_grpc.add_HealthServicer_to_server(self, server)

    def follow(self) -> None:
        """Keep the statuses current for Watch streams (once the server has started)."""
        self._poll = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self.refresh()

    async def shut_down(self) -> None:
        """NOT_SERVING for good (sent to every watcher), before the server stops taking calls."""
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        await self.enter_graceful_shutdown()


__all__ = ["SERVICES", "ModelHealth"]
