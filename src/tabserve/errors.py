"""Domain errors. No HTTP here: ``tabserve.api.errors`` alone maps them to status codes."""

from __future__ import annotations

from typing import Any


class TabserveError(Exception):
    """Base class; ``context`` carries machine-readable details (row, feature, limit...)."""

    kind = "error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        return self.message


class InvalidInput(TabserveError):
    """A request's data cannot be scored as given (shape, type, missing/unknown feature, range)."""

    kind = "invalid_input"


class PayloadTooLarge(TabserveError):
    """The request body is over the configured size limit."""

    kind = "payload_too_large"


class ClientGone(TabserveError):
    """The client closed the connection (or timed out sending) before the whole request body arrived: nothing
    is scored, and the answer (logged as nginx's 499) reaches nobody."""

    kind = "client_closed_request"


class ModelNotReady(TabserveError):
    """No model is loaded yet (still loading, or the load failed)."""

    kind = "model_not_ready"


class VersionUnavailable(ModelNotReady):
    """A version that exists could not be loaded by the server (a broken file, too little memory): a fault on
    the server's side, which the client did not cause and may retry."""

    kind = "version_unavailable"


class ServerFault(TabserveError):
    """A bug or failure on the server's side (500): the answer names the request id, the log has the rest."""

    kind = "internal_error"


class ScoringFailed(ServerFault):
    """onnxruntime failed on rows that passed validation: a fault of the model or the server, never of the
    request. The cause is chained (``__cause__``) for the log line."""

    kind = "scoring_failed"


class ModelNotFound(TabserveError):
    """A requested model or version does not exist."""

    kind = "model_not_found"


class Overloaded(TabserveError):
    """The server sheds this request; the client may retry later."""

    kind = "overloaded"


class RateLimited(TabserveError):
    """A client spent its rate limit (rows for predictions, requests elsewhere); it may retry after ``reset``."""

    kind = "rate_limited"


class NotAuthenticated(TabserveError):
    """The request carries no API key, or one that is not configured."""

    kind = "unauthenticated"


class PermissionDenied(TabserveError):
    """The API key is valid but lacks the scope the endpoint needs (``admin`` for model management)."""

    kind = "forbidden"


class UnsupportedEncoding(InvalidInput):
    """A request body sent with a ``Content-Encoding`` the server does not decode."""

    kind = "unsupported_encoding"


class ConfigError(TabserveError):
    """The server's own configuration is invalid (API keys, CORS, rate limits...); it refuses to start."""

    kind = "invalid_configuration"


class RegistryUnavailable(ModelNotReady, ConfigError):
    """The model registry cannot be reached now (down, or no answer in time): worth retrying, unlike a wrong
    URI; a server falls back on the version it served last when a verified copy is cached."""

    kind = "registry_unavailable"


class DeadlineExceeded(TabserveError):
    """The request's deadline passed before its prediction was ready; it left the queue."""

    kind = "deadline_exceeded"


class BundleError(TabserveError):
    """A bundle is missing, tampered with or inconsistent; it is never served."""

    kind = "invalid_bundle"


class DataError(TabserveError):
    """Training data cannot be used (unreadable file, missing column, bad values...)."""

    kind = "invalid_data"


class ExportError(TabserveError):
    """A model cannot be exported to ONNX, or the export does not reproduce it within tolerance."""

    kind = "export_failed"


class OptionError(TabserveError, ValueError):
    """A training option cannot be used: an unknown hyper-parameter or value, an estimator whose library is
    not installed."""

    kind = "invalid_option"


class ModelFileError(TabserveError):
    """A model file to import is unreadable, of an unknown format, or a pickle not trusted."""

    kind = "invalid_model_file"
