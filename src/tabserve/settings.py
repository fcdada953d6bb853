"""All configuration in one place: ``TABSERVE_*`` environment variables, overridden by CLI flags."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEMO_MODEL_NAME = "demo"


def default_home() -> Path:
    """``$TABSERVE_HOME``, else ``~/.tabserve``: where trained bundles and local state live."""
    return Path(os.environ.get("TABSERVE_HOME") or Path.home() / ".tabserve").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TABSERVE_", extra="ignore")

    home: Path = Field(default_factory=default_home,
                       description="Folder for trained bundles (models/NAME/VERSION) and local state.")
    model_path: Path | None = Field(None, description="Bundle (or model folder) to serve; default: the demo model "
                                    "under HOME/models/demo.")
    model_uri: str | None = Field(None, description="Registry model to serve instead of MODEL_PATH: "
                                  "models:/NAME@ALIAS, models:/NAME/VERSION or models:/NAME (latest); needs the "
                                  "[mlflow] extra and MLFLOW_TRACKING_URI (default: SQLite under HOME/mlflow).")
    models: dict[str, str] = Field(default_factory=dict, description="More models served next to the default "
                                   "one, as JSON {\"NAME\": \"URI or path\"}; each answers at "
                                   "/api/v1/models/NAME/predict and /v2/models/NAME/infer.")
    poll_interval_s: float = Field(30.0, ge=0, description="How often each model's source is asked whether its "
                                   "alias moved or a newer version appeared (then loaded, verified, warmed and "
                                   "swapped in); 0 = never (POST /api/v1/admin/models/NAME/reload still does).")
    traffic: dict[str, dict] = Field(default_factory=dict, description="A/B and shadow policies as JSON "
                                     "{\"NAME\": {\"variants\": {\"challenger\": 10}, \"shadow\": \"LABEL\", "
                                     "\"sticky_header\": \"x-tabserve-key\"}} (see docs/lifecycle.md).")
    max_pinned_versions: int = Field(4, ge=1, description="Explicit versions (/versions/V/ requests) kept loaded "
                                     "besides the served ones; the least recently used beyond it is released.")
    shadow_queue_size: int = Field(1000, ge=1, description="Requests waiting to be scored by a shadow version; "
                                   "beyond it shadow copies are dropped (and counted), never the answer delayed.")
    pretrain: bool = Field(True, description="Train the demo model first when no model is given and none is at "
                           "the default location (needs the [train] extra).")
    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 to listen on every interface.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes, each with its own model session.")
    intra_op_threads: int = Field(1, ge=0, description="onnxruntime threads per inference (0 = one per core).")
    execution_providers: str = Field("auto", description="onnxruntime execution providers, best first: 'auto' "
                                     "(CUDA when available and the GPU runs the whole graph with the CPU's "
                                     "answers, else CPU) or a comma-separated list such as "
                                     "'CUDAExecutionProvider,CPUExecutionProvider'; CPU is always the fallback.")
    batch_intra_op_threads: int = Field(1, ge=0, description="onnxruntime threads for batches larger than "
                                        "INLINE_MAX_ROWS, on a second session when it differs from "
                                        "INTRA_OP_THREADS (0 = onnxruntime's default: every core, whatever the "
                                        "process affinity; a 1000-row forest batch in half the time on 2 cores).")
    max_batch_rows: int = Field(10_000, ge=1, description="Most rows accepted in one request.")
    explain_workers: int = Field(1, ge=1, description="Threads computing explanations, each at idle CPU priority "
                                 "(SCHED_IDLE) so that predictions always come first.")
    explain_max_pending: int = Field(16, ge=1, description="Explanation requests queued or running; beyond it they "
                                     "get 503 with Retry-After, never slowing predictions.")
    explain_max_rows: int = Field(1000, ge=1, description="Most rows in one explanation request (422 over; at most "
                                  "MAX_BATCH_ROWS). A 100-tree depth-12 forest explains ~100 rows a second per worker.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 over).")
    inline_max_bytes: int = Field(8 * 1024, ge=0, description="Bodies up to this size are decoded and checked on "
                                  "the event loop (cheaper than a thread hand-off); larger ones in a worker thread.")
    max_batch_size: int = Field(256, ge=1, description="Adaptive batching: most rows scored in one onnxruntime "
                                "call across concurrent requests; a request this large runs alone.")
    max_queue_delay_us: int = Field(0, ge=0, description="Adaptive batching: extra wait (µs) for more rows before a "
                                    "batch runs; 0 batches what arrives in the same event-loop tick.")
    max_queue_size: int = Field(20_000, ge=1, description="Rows waiting to be scored; beyond it requests get 503 "
                                "with Retry-After.")
    inline_max_rows: int = Field(32, ge=0, description="Batches up to this many rows run on the event loop (cheaper "
                                 "than a thread hand-off); larger ones in a worker thread.")
    request_timeout_ms: int = Field(30_000, ge=0, description="Deadline for a prediction once queued (504 past it; "
                                    "0 = none).")
    range_policy: Literal["off", "warn", "reject"] = Field(
        "warn", description="Values outside the training min/max: ignore, warn in the response, or reject (422).")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    access_log: bool = Field(True, description="One JSON log line per request.")
    wire_lane: bool = Field(True, description="Answer one-row and small prediction requests from the HTTP "
                            "connection itself, without uvicorn's per-request ASGI cycle (api/wire.py; same "
                            "answers, logs and metrics). Used only under `tabserve serve` with no guard, CORS, "
                            "trusted proxies or root path; off: every request takes the ASGI path.")
    metrics: bool = Field(True, description="Record Prometheus metrics and expose them at /metrics.")
    drift_window_rows: int = Field(1000, ge=0, description="Recent rows per worker over which input drift "
                                   "(PSI of each feature against its training quantiles) is computed; 0 = off.")
    metrics_dir: Path | None = Field(None, description="Folder where several workers share their metrics "
                                     "(emptied at start); default: $PROMETHEUS_MULTIPROC_DIR, else "
                                     "HOME/metrics/PORT, removed at exit.")
    # -- production hardening: all off by default (the local demo needs none); see docs/production.md
    api_keys: str | None = Field(None, description="API keys, stored hashed: a JSON list of {\"name\", \"sha256\", "
                                 "\"scopes\": [\"predict\"] or [\"predict\", \"admin\"]} or the path of a JSON file "
                                 "holding it (`tabserve keys new` makes one); unset = no authentication.")
    rate_limit: str | None = Field(None, description="Per-client limit (each API key, else each client IP), e.g. "
                                   "'100/second' or '5000/minute'; a prediction costs its rows; unset = none.")
    rate_limit_storage: str = Field("memory://", description="Where rate-limit counters live: memory:// (one "
                                    "process) or redis://HOST:PORT/DB (shared by workers and replicas).")
    max_concurrent_requests: int = Field(0, ge=0, description="Requests in flight beyond this get 503 with "
                                         "Retry-After (health probes and /metrics never); 0 = no limit.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Browser origins allowed by CORS (comma-separated or a JSON list); "
        "empty = no CORS headers.")
    cors_allow_credentials: bool = Field(False, description="Let browsers send cookies/HTTP auth cross-origin; "
                                         "refused together with the '*' origin.")
    shutdown_grace_s: float = Field(25.0, ge=0, description="On SIGTERM, how long in-flight requests may take to "
                                    "finish before they are cancelled and the process exits 0.")
    shutdown_delay_s: float = Field(0.0, ge=0, description="On SIGTERM, keep serving this long with readiness "
                                    "answering 503 (so load balancers stop routing) before closing the listener.")

    admin_routes: Literal["auto", "on", "off"] = Field(
        "auto", description="Routes that change what is served (reload, traffic, v2 repository load/unload): "
        "'auto' = on only when API_KEYS is set (they then need the admin scope), 'on' = on even without keys "
        "(local use: any client on the network can unload a model), 'off' = never.")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Addresses or CIDRs of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (comma-separated or a JSON list); empty = the peer address is the client.")
    model_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Folders (besides HOME and the folders of the models served at start) "
        "from which the admin API may load variants and shadows (comma-separated or a JSON list).")

    max_header_bytes: int = Field(64 * 1024, ge=1024, description="Largest request line and headers accepted, in "
                                  "all (431 at once over it, the connection closed).")
    header_timeout_s: float = Field(10.0, ge=0, description="Time a client has to send a request's line and "
                                    "headers, from its first byte (408 past it, the connection closed); 0 = none.")
    body_timeout_s: float = Field(10.0, ge=0, description="Longest pause between two reads of a request body (408 "
                                  "past it, the connection closed); 0 = none.")

    max_inflight_body_bytes: int = Field(64 * 1024 * 1024, ge=0, description="Bytes of request bodies held or "
                                         "decoded at once in a process: a request whose body would pass it gets "
                                         "503 with Retry-After before its body is read (bodies up to "
                                         "INLINE_MAX_BYTES always pass, and so does a lone body); 0 = no limit.")
    registry_timeout_s: float = Field(10.0, gt=0, description="Longest wait for an answer of an MLflow registry "
                                      "server (which version an alias names, a version's details); past it a "
                                      "poll keeps the version served, a restart serves the cached version served "
                                      "last, and a reload or pinned request answers 503.")

    payload_log_dir: Path | None = Field(None, description="Folder of the payload log: sampled predictions "
                                         "(features, prediction, probabilities, request id) written as Parquet "
                                         "under DIR/MODEL/date=YYYY-MM-DD/, with POST /api/v1/feedback and GET "
                                         "/api/v1/models/NAME/quality reading it (docs/loop.md); unset = off.")
    payload_sample: float = Field(1.0, ge=0, le=1, description="Fraction of prediction requests the payload log "
                                  "keeps (1 = all).")
    payload_queue_rows: int = Field(100_000, ge=1, description="Predicted rows waiting for the payload log's "
                                    "writer; beyond it rows are dropped and counted, never the answer delayed.")
    payload_rotate_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="A payload log file is published "
                                      "once it holds this many bytes...")
    payload_rotate_s: float = Field(60.0, gt=0, description="...or once it is this old: rows become readable "
                                    "(feedback joins, quality, retraining) at most this long after the answer.")
    quality_window_s: float = Field(7 * 86400.0, gt=0, description="Live quality (GET .../quality without "
                                    "since, the tabserve_model_quality gauges) covers predictions this recent.")
    quality_interval_s: float = Field(60.0, ge=0, description="How often the tabserve_model_quality gauges are "
                                      "recomputed from the log files published since the last pass; 0 = never.")

    grpc_port: int | None = Field(None, ge=0, le=65535, description="Also serve the Open Inference Protocol (v2) "
                                  "over gRPC on this port (inference.GRPCInferenceService, same host; needs the "
                                  "[grpc] extra); off when unset.")

    tensor_min_rows: int = Field(2048, ge=0, description="A tree model's batches of at least this many rows run on "
                                 "its tensor graph on the GPU when execution_providers 'auto' puts it there "
                                 "(0 = never; single rows always use model.onnx on the CPU).")

    @field_validator("cors_origins", "trusted_proxies", "model_roots", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [o.strip() for o in text.split(",") if o.strip()]
        return value

    @property
    def demo_model_dir(self) -> Path:
        return self.home / "models" / DEMO_MODEL_NAME

    @property
    def resolved_model_path(self) -> Path:
        return self.model_path if self.model_path is not None else self.demo_model_dir

    @property
    def resolved_model_uri(self) -> str:
        """What the default model is loaded from: MODEL_URI, else the bundle path."""
        return self.model_uri or str(self.resolved_model_path)

    def to_env(self) -> dict[str, str]:
        """These settings as ``TABSERVE_*`` variables, so uvicorn's worker processes rebuild them."""
        out = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, list | dict):
                out[f"TABSERVE_{name.upper()}"] = json.dumps(value)
                continue
            out[f"TABSERVE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return out
