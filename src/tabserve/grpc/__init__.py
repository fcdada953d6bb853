"""The Open Inference Protocol (v2) over gRPC: ``inference.GRPCInferenceService`` on the HTTP server's data plane.

Needs the ``[grpc]`` extra (grpcio, protobuf); importing this package does not import them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tabserve.errors import ConfigError

if TYPE_CHECKING:
    from tabserve.api.dataplane import DataPlane
    from tabserve.api.guard import Admission
    from tabserve.grpc.server import GrpcServer
    from tabserve.settings import Settings


async def start_grpc_server(settings: Settings, plane: DataPlane, admission: Admission, *,
                            metrics: Any = None) -> GrpcServer:
    """The app lifespan's hook: serve gRPC on ``settings.grpc_port`` through ``plane``, and stop it with HTTP's
    graceful shutdown on SIGTERM. Call it before installing the app's own SIGTERM drain handler; ``await
    server.stop()`` at shutdown."""
    try:
        from tabserve.grpc.server import start
    except ImportError as exc:
        raise ConfigError(f"grpc_port is set but gRPC needs the [grpc] extra ({exc.name} is missing): "
                          "pip install 'tabserve[grpc]'") from None
    return await start(settings, plane, admission, metrics=metrics)


__all__ = ["start_grpc_server"]
