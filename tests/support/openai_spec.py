"""Check bodies against OpenAI's own OpenAPI document (tests/support/specs/openai-openapi.yaml).

The document says ``openapi: 3.1.0`` (JSON Schema 2020-12, ``type: "null"`` in ``anyOf``) but
still carries OpenAPI 3.0's ``nullable: true`` in places, including beside a ``$ref`` or a
``oneOf``. jsonschema knows no ``nullable``, so each one is rewritten to what it means: the
node's schema, or null. Everything else is validated as JSON Schema 2020-12 (``discriminator``
and ``x-*`` keywords are annotations and ignored).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

VENDORED = Path(__file__).resolve().parent / "specs" / "openai-openapi.yaml"


def spec_path() -> Path:
    """OpenAI's spec as vendored beside this module (openai-openapi at f85dbe22, the copy in the
    project's shared/specs), so the suite needs nothing outside the repository; MEDAI_OPENAI_SPEC
    names another copy (e.g. a newer spec to check against)."""
    explicit = os.environ.get("MEDAI_OPENAI_SPEC")
    return Path(explicit) if explicit else VENDORED


def nullable_to_jsonschema(node: Any) -> Any:
    """``nullable: true`` → the node or null, however the node is written."""
    if isinstance(node, list):
        return [nullable_to_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: nullable_to_jsonschema(v) for k, v in node.items()}
    if node.pop("nullable", False) is not True:
        return node
    simple = "type" in node and not any(k in node for k in ("$ref", "allOf", "anyOf", "oneOf"))
    if simple and isinstance(node["type"], str):
        node["type"] = [node["type"], "null"]
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        return node
    return {"anyOf": [node, {"type": "null"}]}


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    with spec_path().open("rb") as f:
        document = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return nullable_to_jsonschema(document)


@lru_cache(maxsize=32)
def validator(schema_name: str) -> jsonschema.protocols.Validator:
    document = spec()
    assert schema_name in document["components"]["schemas"], f"no schema {schema_name} in the OpenAI spec"
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{schema_name}",
        "components": document["components"],
    }
    return jsonschema.Draft202012Validator(root)


def errors_of(schema_name: str, body: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator(schema_name).iter_errors(body)
    ]


def assert_valid(schema_name: str, body: Any) -> None:
    """Fail with every way ``body`` departs from the spec's ``schema_name``."""
    problems = errors_of(schema_name, body)
    assert not problems, f"not a valid {schema_name}:\n" + "\n".join(problems[:20])


def request_properties(schema_name: str = "CreateChatCompletionRequest") -> set[str]:
    """Every property a request schema declares, through its ``allOf`` and ``$ref`` parts."""
    schemas = spec()["components"]["schemas"]
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if "$ref" in node:
            walk(schemas[node["$ref"].rsplit("/", 1)[1]])
        for part in node.get("allOf", []):
            walk(part)
        found.update(node.get("properties", {}))

    walk(schemas[schema_name])
    return found
