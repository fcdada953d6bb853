"""API keys: stored as SHA-256 hashes in the configuration, presented as ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``, each with scopes (``predict``, ``admin``) and optionally its own rate limit."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import Scope

from tabserve.errors import ConfigError

SCOPES = ("predict", "admin")
KEY_PREFIX = "tsk_"  # makes a leaked key easy to recognise (secret scanners, logs)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9._:@-]{1,64}$")


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key: what the configuration stores. Keys are random (``new_key``), so a plain hash
    is enough; a slow password hash would only slow every request down."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key: 256 bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    sha256: str
    scopes: frozenset[str]
    rate_limit: str | None = None  # overrides the server's rate_limit for this key; "none" = unlimited


def parse_api_keys(value: str | None) -> tuple[ApiKey, ...]:
    """``TABSERVE_API_KEYS``: a JSON list of entries, or the path of a JSON file holding one."""
    if value is None or not value.strip():
        return ()
    text = value.strip()
    where = "TABSERVE_API_KEYS"
    if not text.startswith(("[", "{")):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{where} names the key file {str(path)!r}, which cannot be read: {exc.strerror}; "
                              "give a readable JSON file or the JSON list itself") from None
        where = str(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}") from None
    if isinstance(raw, dict) and "keys" in raw:
        raw = raw["keys"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where} must be a non-empty JSON list of {{\"name\", \"sha256\", \"scopes\"}} entries")
    keys = tuple(_entry(item, i, where) for i, item in enumerate(raw))
    for attr in ("name", "sha256"):
        seen = [getattr(k, attr) for k in keys]
        dupes = sorted({v for v in seen if seen.count(v) > 1})
        if dupes:
            raise ConfigError(f"{where}: {attr} {dupes[0]!r} appears more than once; each key needs its own")
    return keys


def _entry(item: Any, i: int, where: str) -> ApiKey:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: entry {i} must be an object with \"name\", \"sha256\" and \"scopes\"")
    unknown = sorted(set(item) - {"name", "sha256", "scopes", "rate_limit"})
    if unknown:
        raise ConfigError(f"{where}: entry {i} has unknown field(s) {', '.join(unknown)}; allowed: name, sha256, "
                          "scopes, rate_limit")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: entry {i} needs a \"name\" of 1-64 letters, digits or ._:@- (it names the "
                          "client in logs and rate limits)")
    digest = item.get("sha256")
    if "key" in item or not isinstance(digest, str) or not _SHA256.match(digest.lower()):
        raise ConfigError(f"{where}: key {name!r} needs \"sha256\": the 64 hex digits of the key's SHA-256 "
                          "(`tabserve keys hash` prints it); the key itself is never stored")
    scopes = item.get("scopes", ["predict"])
    if not isinstance(scopes, list) or not scopes or any(s not in SCOPES for s in scopes):
        raise ConfigError(f"{where}: key {name!r} has scopes {scopes!r}; use [\"predict\"] or "
                          "[\"predict\", \"admin\"]")
    limit = item.get("rate_limit")
    if limit is not None and not isinstance(limit, str):
        raise ConfigError(f"{where}: key {name!r} has rate_limit {limit!r}; use a string such as \"100/second\" "
                          "or \"none\"")
    return ApiKey(name=name, sha256=digest.lower(), scopes=frozenset(scopes), rate_limit=limit)


class KeyRing:
    """The configured keys; ``find`` is on every request, so it hashes once and compares in constant time."""

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self.keys = keys
        self._digests = [(k.sha256.encode(), k) for k in keys]

    def find(self, presented: str) -> ApiKey | None:
        digest = hashlib.sha256(presented.encode()).hexdigest().encode()
        match = None
        for expected, key in self._digests:  # no early exit: the time does not tell which key matched
            if hmac.compare_digest(expected, digest):
                match = key
        return match


# Where the guard leaves the ApiKey a request presented, for the routes that authorize by scope (admin_gate).
SCOPE_KEY = "tabserve.api_key"


def presented_key(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, read in one pass over the headers."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key":
            token = value.decode("latin-1").strip()
            if token:
                return token
    return None
