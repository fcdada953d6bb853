"""OpenAPI documentation of bodies that the hot path decodes by hand (no pydantic per request)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body, with its sub-schemas inlined.

    pydantic puts nested models under ``$defs`` with ``#/$defs/...`` references, which do not resolve from
    the OpenAPI document's root; inlining keeps the schema self-contained for validators and clients."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _inline(schema, defs)}}}}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node
