"""Whose fault a model server's error answer is: the request's (a 400 for that caller, never counted
against the backend) or the backend's (counted on its circuit, failed over). The bodies are what
llama.cpp's server, vLLM, TGI and Ollama answer."""

from __future__ import annotations

import json

import pytest

from apps.inference import backends
from apps.inference.router import EndpointInfo


def llama(message: str, type_: str, code: int) -> bytes:
    """llama.cpp's format_error_response: {"error": {"code", "message", "type"}}."""
    return json.dumps({"error": {"code": code, "message": message, "type": type_}}).encode()


def vllm(message: str, type_: str, code: int) -> bytes:
    return json.dumps({"object": "error", "message": message, "type": type_, "param": None, "code": code}).encode()


def tgi(message: str, error_type: str) -> bytes:
    return json.dumps({"error": message, "error_type": error_type}).encode()


def ollama(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


CLIENT_FAULTS = [
    # llama.cpp: runtime_error in the chat handler, turned into 500 server_error by ex_wrapper
    (
        500,
        llama(
            "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
            "server_error",
            500,
        ),
        "unsupported_input",
        400,
    ),
    (
        500,
        llama(
            "audio input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
            "server_error",
            500,
        ),
        "unsupported_input",
        400,
    ),
    (500, llama("tools param requires --jinja flag", "server_error", 500), "unsupported_input", 400),
    (500, llama("Unsupported param: echo", "server_error", 500), "unsupported_input", 400),
    (500, llama("Cannot use both json_schema and grammar", "server_error", 500), "invalid_request", 400),
    (
        500,
        llama(
            "Failed to parse tools: [json.exception.type_error.302] type must be string; tools = []",
            "server_error",
            500,
        ),
        "invalid_request",
        400,
    ),
    (500, llama("Invalid base64 value", "server_error", 500), "invalid_request", 400),
    (500, llama("Failed to tokenize prompt", "server_error", 500), "invalid_request", 400),
    (
        500,
        llama(
            "Jinja Exception: Conversation roles must alternate user/assistant/user/assistant/...", "server_error", 500
        ),
        "invalid_request",
        400,
    ),
    (
        500,
        llama("The model produced output that does not match the expected Hermes 2 Pro format", "server_error", 500),
        "invalid_request",
        400,
    ),
    (
        500,
        llama(
            "input (3000 tokens) is too large to process. increase the physical batch size (current batch size: 2048)",
            "server_error",
            500,
        ),
        "context_length_exceeded",
        400,
    ),
    (500, llama("context shift is disabled", "server_error", 500), "context_length_exceeded", 400),
    # llama.cpp: its own 4xx/501 types
    (
        400,
        llama(
            "request (5000 tokens) exceeds the available context size (2048 tokens), try increasing it",
            "exceed_context_size_error",
            400,
        ),
        "context_length_exceeded",
        400,
    ),
    (400, llama("'messages' is required", "invalid_request_error", 400), "invalid_request", 400),
    (
        400,
        llama("logprobs is not supported with tools + stream", "invalid_request_error", 400),
        "unsupported_input",
        400,
    ),
    (
        400,
        llama("[json.exception.parse_error.101] parse error at line 1", "invalid_request_error", 400),
        "invalid_request",
        400,
    ),
    (
        400,
        llama("Failed to initialize samplers: failed to parse grammar", "invalid_request_error", 400),
        "invalid_request",
        400,
    ),
    (
        501,
        llama("This server does not support embeddings. Start it with `--embeddings`", "not_supported_error", 501),
        "unsupported_input",
        400,
    ),
    (
        501,
        llama("The current model does not support audio input.", "not_supported_error", 501),
        "unsupported_input",
        400,
    ),
    # vLLM: ValueError → 400 BadRequestError; older releases answered pydantic errors with 422
    (
        400,
        vllm(
            "This model's maximum context length is 2048 tokens. However, you requested 3000 tokens (2900 in "
            "the messages, 100 in the completion). Please reduce the length of the messages or completion.",
            "BadRequestError",
            400,
        ),
        "context_length_exceeded",
        400,
    ),
    (
        400,
        vllm(
            "'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum context length is "
            "2048 tokens and your request has 20 input tokens (4096 > 2048 - 20).",
            "BadRequestError",
            400,
        ),
        "context_length_exceeded",
        400,
    ),
    (400, vllm("Qwen2ForCausalLM is not a multimodal model", "BadRequestError", 400), "unsupported_input", 400),
    (
        400,
        vllm("1 validation error for ChatCompletionRequest temperature", "BadRequestError", 400),
        "invalid_request",
        400,
    ),
    (
        422,
        json.dumps({"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}).encode(),
        "invalid_request",
        400,
    ),
    # TGI and Ollama
    (
        422,
        tgi(
            "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048. Given: 2000 `inputs` "
            "tokens and 100 `max_new_tokens`",
            "validation",
        ),
        "context_length_exceeded",
        400,
    ),
    (400, ollama("invalid message format"), "invalid_request", 400),
    (500, ollama("this model is missing data required for image input"), "unsupported_input", 400),
    # a proxy in front of the model server
    (413, b"<html><body>413 Request Entity Too Large</body></html>", "request_too_large", 413),
]

BACKEND_FAULTS = [
    # llama.cpp itself failing, loading, or not serving what medai asked for
    (500, llama("got exception: failed to decode the batch", "server_error", 500)),
    (500, llama("failed to process mtmd chunk", "server_error", 500)),
    (500, b"Internal Server Error"),
    (503, llama("Loading model", "unavailable_error", 503)),
    (503, llama("no slot available", "unavailable_error", 503)),
    (400, llama("model 'smollm2' not found", "invalid_request_error", 400)),  # router mode: wrong served model id
    (404, llama("model is not found", "not_found_error", 404)),
    # a wrong backend API key in medai's registry (no client credential ever reaches a backend)
    (401, llama("Invalid API Key", "authentication_error", 401)),
    (403, b"Forbidden"),
    # vLLM: misconfigured served model id, engine dead
    (404, vllm("The model `gpt-4` does not exist.", "NotFoundError", 404)),
    (
        500,
        vllm(
            "EngineCore encountered an issue. See stack trace (above) for the root cause.", "InternalServerError", 500
        ),
    ),
    (500, b"CUDA error: an illegal memory access was encountered (cudaErrorIllegalAddress)"),
    # TGI, Ollama
    (424, tgi("Request failed during generation: Server error: CUDA out of memory", "generation")),
    (429, tgi("Model is overloaded", "overloaded")),
    (404, ollama('model "llama3" not found, try pulling it first')),
    (500, ollama("llama runner process has terminated: signal: killed")),
    # gateways and timeouts
    (502, b"Bad Gateway"),
    (504, b"Gateway Timeout"),
    (408, b"Request Timeout"),
]


@pytest.mark.parametrize(("status", "body", "code", "caller_status"), CLIENT_FAULTS)
def test_errors_the_request_caused_are_the_callers_fault(status, body, code, caller_status):
    fault = backends.classify(status, body)
    assert fault.client, body
    assert (fault.code, fault.status) == (code, caller_status), body


@pytest.mark.parametrize(("status", "body"), BACKEND_FAULTS)
def test_failures_of_the_backend_itself_are_its_fault(status, body):
    assert not backends.classify(status, body).client, body


def test_client_text_echoed_in_an_error_cannot_pass_for_a_missing_model():
    # llama.cpp echoes the tools it could not parse; a client writing "model ... not found" there
    # must still be the one at fault.
    body = llama('Failed to parse tools: bad; tools = [{"description": "model x not found"}]', "server_error", 500)
    assert backends.classify(500, body).client


ENDPOINT = EndpointInfo(
    id=1,
    name="m",
    kind="llamacpp",
    base_url="http://127.0.0.1:1/v1",
    backend_model="m",
    api_key="",
    context_length=2048,
    vram_mb=0,
    rank=1,
    enabled=True,
    supports_embeddings=False,
)


def test_a_client_fault_raises_backend_rejected_with_the_backends_reason():
    body = llama(
        "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
        "server_error",
        500,
    )
    with pytest.raises(backends.BackendRejected) as caught:
        backends._check(ENDPOINT, 500, body)
    exc = caught.value
    assert (exc.status_code, exc.code, exc.backend_status) == (400, "unsupported_input", 500)
    assert exc.message.startswith("image input is not supported")


def test_a_context_overflow_names_the_messages_param():
    body = llama(
        "request (5000 tokens) exceeds the available context size (2048 tokens), try increasing it",
        "exceed_context_size_error",
        400,
    )
    with pytest.raises(backends.BackendRejected) as caught:
        backends._check(ENDPOINT, 400, body)
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")


def test_a_backend_fault_raises_backend_failure_with_its_status():
    with pytest.raises(backends.BackendFailure) as caught:
        backends._check(ENDPOINT, 401, llama("Invalid API Key", "authentication_error", 401))
    assert caught.value.status_code == 401 and "Invalid API Key" in caught.value.reason
