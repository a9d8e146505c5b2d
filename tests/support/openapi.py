"""Check real responses against medai's generated OpenAPI document."""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import jsonschema


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    from drf_spectacular.generators import SchemaGenerator

    return _nullable_to_jsonschema(SchemaGenerator().get_schema(request=None, public=True))


def _nullable_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` is ``type: [T, "null"]`` in JSON Schema."""
    if isinstance(node, dict):
        node = {k: _nullable_to_jsonschema(v) for k, v in node.items()}
        if node.pop("nullable", False):
            if "type" in node:
                node["type"] = [node["type"], "null"]
            elif "allOf" in node or "$ref" in node:
                node = {"anyOf": [{k: v for k, v in node.items()}, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_to_jsonschema(v) for v in node]
    return node


def assert_matches(path: str, method: str, status: int, body: Any) -> None:
    """Validate ``body`` against the documented response of ``method path`` for ``status``."""
    doc = openapi_document()
    operation = doc["paths"][path][method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {path} does not document status {status}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    root = copy.copy(doc)
    root["$ref"] = schema["$ref"] if "$ref" in schema else None
    if root["$ref"] is None:
        root.pop("$ref")
        root.update(schema)
    jsonschema.validate(body, root)
