"""The validate step of ``POST /v1/embeddings`` (OpenAI's CreateEmbeddingRequest) and
``POST /v1/rerank`` (the Cohere/Jina shape that llama.cpp and vLLM serve). Hand-written rather than
a serializer: the requests are flat and the checks few, so each costs microseconds. Each error is
a 400 naming the field (``input[3]``, ``documents[0]``), as OpenAI's own are."""

from __future__ import annotations

from typing import Any

from apps.inference.errors import ApiError
from apps.inference.validation.chat_request import find_unforwardable

MAX_INPUTS = 2048  # OpenAI's limit of items in ``input``
MAX_DOCUMENTS = 1000
EMBEDDING_FIELDS = frozenset({"input", "model", "encoding_format", "dimensions", "user"})
RERANK_FIELDS = frozenset({"model", "query", "documents", "top_n", "return_documents", "user"})


def _bad(param: str, message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, f"{param}: {message}", param)


def _unknown(data: dict[str, Any], known: frozenset[str]) -> None:
    for name in data:
        if name not in known:
            raise _bad(name, "unknown parameter.", "unknown_parameter")


def _forwardable(data: dict[str, Any]) -> None:
    """What the JSON parser took but cannot be sent on (a lone surrogate, NaN): a 400 naming it."""
    unforwardable = find_unforwardable(data)
    if unforwardable is not None:
        param, why = unforwardable
        raise ApiError(400, "invalid_value", f"{param}: {why}." if param else f"The request {why}.", param)


def _model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("model", "this field is required (a model name or an agent type).")
    if len(model) > 200:
        raise _bad("model", "at most 200 characters.")
    return model


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_array(value: list[Any], param: str) -> None:
    if not value:
        raise _bad(param, "a token array must not be empty.")
    for j, token in enumerate(value):
        if not _int(token) or token < 0:
            raise _bad(f"{param}[{j}]", "a token must be a non-negative integer.")


def _inputs(value: Any) -> tuple[list[str] | list[list[int]], bool]:
    """``input`` as a list of items (strings, or token arrays) and whether it was a single one."""
    if isinstance(value, str):
        if not value:
            raise _bad("input", "must not be an empty string.")
        return [value], True
    if not isinstance(value, list) or not value:
        raise _bad("input", "must be a non-empty string, a list of strings, or token arrays.")
    if len(value) > MAX_INPUTS:
        raise _bad("input", f"at most {MAX_INPUTS} items; this has {len(value)}.")
    if all(_int(v) for v in value):  # one token array
        _token_array(value, "input")
        return [value], True
    if isinstance(value[0], str):
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise _bad(f"input[{i}]", "must be a non-empty string (as the first item is).")
        return value, False
    for i, item in enumerate(value):
        if not isinstance(item, list):
            raise _bad(f"input[{i}]", "must be a string or a token array (a list of integers).")
        _token_array(item, f"input[{i}]")
    return value, False


def validate_embeddings(data: dict[str, Any]) -> dict[str, Any]:
    """The validated embeddings request: ``{model, inputs, single, encoding_format, dimensions,
    user}``; ApiError 400 naming the first bad field."""
    _unknown(data, EMBEDDING_FIELDS)
    _forwardable(data)
    model = _model(data)
    if "input" not in data:
        raise _bad("input", "this field is required.")
    inputs, single = _inputs(data["input"])
    encoding = data.get("encoding_format")
    if encoding is None:
        encoding = "float"
    elif encoding not in ("float", "base64"):
        raise _bad("encoding_format", "must be 'float' or 'base64'.")
    dimensions = data.get("dimensions")
    if dimensions is not None and (not _int(dimensions) or dimensions < 1):
        raise _bad("dimensions", "must be an integer of at least 1.")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user", "must be a string.")
    return {
        "model": model,
        "inputs": inputs,
        "single": single,
        "encoding_format": encoding,
        "dimensions": dimensions,
        "user": user or "",
    }


def validate_rerank(data: dict[str, Any]) -> dict[str, Any]:
    """The validated rerank request: ``{model, query, documents, top_n, return_documents}``."""
    _unknown(data, RERANK_FIELDS)
    _forwardable(data)
    model = _model(data)
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _bad("query", "this field is required (a non-empty string).")
    documents = data.get("documents")
    if not isinstance(documents, list) or not documents:
        raise _bad("documents", "this field is required (a non-empty list of strings).")
    if len(documents) > MAX_DOCUMENTS:
        raise _bad("documents", f"at most {MAX_DOCUMENTS} documents; this has {len(documents)}.")
    for i, doc in enumerate(documents):
        if not isinstance(doc, str) or not doc:
            raise _bad(f"documents[{i}]", "must be a non-empty string.")
    top_n = data.get("top_n")
    if top_n is not None and (not _int(top_n) or top_n < 1):
        raise _bad("top_n", "must be an integer of at least 1.")
    return_documents = data.get("return_documents", False)
    if not isinstance(return_documents, bool):
        raise _bad("return_documents", "must be true or false.")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user", "must be a string.")
    return {
        "model": model,
        "query": query,
        "documents": documents,
        "top_n": min(top_n or len(documents), len(documents)),
        "return_documents": return_documents,
        "user": user or "",
    }
