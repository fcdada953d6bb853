"""What the server reveals about its filesystem, and where the admin API may point it.

Model locations are shown relative to the folders the operator configured (``HOME/models/demo/3``): a client
learns which version answers, not the layout of the disk. Logs keep absolute paths (operators read them).
The admin API may name a variant or shadow by path only inside those folders, like Triton's model repository:
an admin key must not become a way to probe or load arbitrary files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import orjson
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabserve.core.manifest import MANIFEST_FILE
from tabserve.errors import PermissionDenied
from tabserve.registry import is_registry_uri
from tabserve.settings import Settings


@dataclass(frozen=True, slots=True)
class Root:
    path: Path  # absolute, symlinks resolved
    label: str  # what responses show instead: HOME, MODEL_PATH, MODELS[name], MODEL_ROOTS[i]


class ModelRoots:
    """The folders models may come from: HOME, the folders of the models served at start, ``model_roots``."""

    def __init__(self, roots: list[Root]) -> None:
        self.roots = roots

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRoots:
        given: list[tuple[str | os.PathLike[str], str]] = [(settings.home, "HOME")]
        if settings.model_uri is None:
            given += _model_roots(settings.resolved_model_path, "MODEL_PATH")
        for name, uri in settings.models.items():
            if not is_registry_uri(uri):
                given += _model_roots(Path(uri), f"MODELS[{name}]")
        given += [(root, f"MODEL_ROOTS[{i}]") for i, root in enumerate(settings.model_roots)]
        roots, seen = [], set()
        for path, label in given:
            resolved = Path(path).expanduser().resolve()
            if resolved not in seen and resolved != Path(resolved.anchor):  # "/" as a root would allow all
                seen.add(resolved)
                roots.append(Root(resolved, label))
        return cls(roots)

    def check(self, uri: str, what: str) -> None:
        """Refuse a local path outside every root, with the same words whether or not it exists."""
        if is_registry_uri(uri):
            return
        resolved = Path(uri).expanduser().resolve()
        if not any(resolved.is_relative_to(root.path) for root in self.roots):
            allowed = ", ".join(root.label for root in self.roots)
            raise PermissionDenied(f"{what}: a path must lie inside the folders models may come from ({allowed}; "
                                   "TABSERVE_MODEL_ROOTS adds more); registry URIs (models:/NAME@ALIAS) are "
                                   "always allowed")

    def replacements(self, settings: Settings) -> list[tuple[re.Pattern[bytes], bytes]]:
        """Patterns that turn each root, as written in the settings or resolved, into its label (longest
        first, so a root inside HOME wins), in raw text and in JSON strings."""
        spellings: dict[str, str] = {}
        home = next((root.path for root in self.roots if root.label == "HOME"), None)
        for root in self.roots:  # a root inside HOME shows as a path under it: HOME/models/demo
            if root.label == "HOME" or home is None or not root.path.is_relative_to(home):
                spellings.setdefault(str(root.path), root.label)
        for path, label in [(settings.home, "HOME"), *((r, f"MODEL_ROOTS[{i}]")
                                                         for i, r in enumerate(settings.model_roots))]:
            absolute = Path(path).expanduser().absolute()
            spellings.setdefault(str(absolute).rstrip(os.sep) or os.sep, label)
        out = []
        for text, label in sorted(spellings.items(), key=lambda item: -len(item[0])):
            forms = {text.encode(), orjson.dumps(text)[1:-1]}  # backslashes and quotes escaped in JSON
            for form in forms:
                # a whole path component only: HOME must not turn /srv/home2 into HOME2
                out.append((re.compile(re.escape(form) + rb"(?![^/\\\"'\s,;:)\]}])"), label.encode()))
        return out


def _model_roots(path: Path, label: str) -> list[tuple[Path, str]]:
    """A model served at start: its folder, and for a bundle the folder its versions share (``LABEL/..``:
    a variant named by version number is the bundle's sibling)."""
    path = path.expanduser()
    if (path / MANIFEST_FILE).is_file():
        return [(path, label), (path.parent, f"{label}/..")]
    return [(path, label)]


# Successful answers of these are not rewritten: they carry predictions, not locations, and are the hot path.
_SCORING_SUFFIXES = ("/predict", "/predict/batch", "/infer", "/explain")
_UNTOUCHED = frozenset({"/metrics", "/docs", "/redoc", "/openapi.json"})
_UNTOUCHED_PREFIXES = ("/static-offline-docs/",)  # the docs' scripts and styles


class PathMask:
    """ASGI middleware: model locations in error bodies and in the models, traffic and repository answers
    become ``HOME/...`` (and the other roots' labels). A body is buffered only when it may need it; a
    successful prediction passes through (measured: +2 µs a request, the cost of any send wrapper)."""

    def __init__(self, app: ASGIApp, replacements: list[tuple[re.Pattern[bytes], bytes]]) -> None:
        self.app = app
        self.replacements = replacements

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTOUCHED or scope["path"].startswith(_UNTOUCHED_PREFIXES):
            await self.app(scope, receive, send)
            return
        scoring = scope["path"].endswith(_SCORING_SUFFIXES)
        start: Message | None = None
        passing = False
        chunks: list[bytes] = []

        async def masked(message: Message) -> None:
            nonlocal start, passing
            if passing:
                await send(message)
            elif start is None:
                if scoring and message["type"] == "http.response.start" and message["status"] < 400:
                    passing = True
                    await send(message)
                else:
                    start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._send_masked(send, start, b"".join(chunks))
            else:
                await send(message)

        await self.app(scope, receive, masked)

    def mask_response(self, scope: Scope, response: Response) -> Response:
        """What the middleware does to a response, for one answered without it (``FastLane``): a successful
        scoring answer passes as it is."""
        path = scope["path"]
        if (path in _UNTOUCHED or path.startswith(_UNTOUCHED_PREFIXES)
                or (response.status_code < 400 and path.endswith(_SCORING_SUFFIXES))):
            return response
        body = bytes(response.body)
        for pattern, label in self.replacements:
            body = pattern.sub(label, body)
        if body != response.body:
            response.body = body
            response.raw_headers = [(k, str(len(body)).encode() if k == b"content-length" else v)
                                    for k, v in response.raw_headers]
        return response

    async def _send_masked(self, send: Send, start: Message, body: bytes) -> None:
        for pattern, label in self.replacements:
            body = pattern.sub(label, body)
        headers = MutableHeaders(raw=list(start.get("headers", [])))
        if "content-length" in headers:
            headers["content-length"] = str(len(body))
        await send({**start, "headers": headers.raw})
        await send({"type": "http.response.body", "body": body})
