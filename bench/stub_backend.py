"""A tiny OpenAI-compatible model server of medai's own, for benchmarks and failure tests:
chat completions, (legacy) completions, embeddings and rerank (``ANSWERS``).

Real model servers do not fail on demand; this one does. Modes (``--mode`` or ``POST /_mode``):
``ok`` (answer at once), ``error503``, ``error500``, ``hang`` (never answer), ``slow`` (sleep
``--delay`` seconds first), ``reject400``, ``error`` (answer ``status`` with the JSON ``body``
given with the mode: any model server's error answer), ``hold`` (keep every request waiting until
the mode changes: a test decides when the backend answers). ``GET /_stats`` returns how many
requests it served; set ``"log": []`` with a mode and it also lists, in the order the requests
arrived, the content of each one's last message (which request started when, for order tests);
``"bodies": []`` lists each request's whole JSON body. ``"reply": {"message": {...},
"finish_reason": ..., "usage": {...}}`` makes every chat answer that assistant message (its text
and ``tool_calls``), streamed as deltas (the text in two pieces, each call's arguments in two)
when asked for a stream: what a test needs from a model that will not call a tool on demand
(``"stream_error": "<message>"`` in it: the stream ends with that error event instead of its
last chunk, a model server failing mid-stream).

    python bench/stub_backend.py --port 18200 --mode ok
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct
import time
from typing import Any

STATE: dict[str, Any] = {
    "mode": "ok",
    "delay": 0.0,
    "requests": 0,
    "in_flight": 0,
    "max_in_flight": 0,
    "status": 500,
    "body": {"error": {"message": "stub failed", "type": "server_error"}},
}
MODES = ["ok", "error503", "error500", "hang", "slow", "reject400", "error", "hold"]
# What it answers: chat, (legacy) completions, embeddings (8 dimensions) and rerank.
ANSWERS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank")
_released: asyncio.Event | None = None  # set while the mode is not "hold"


def _gate() -> asyncio.Event:
    global _released
    if _released is None:
        _released = asyncio.Event()
        if STATE["mode"] != "hold":
            _released.set()
    return _released


def _completion(model: str, content: str = "OK") -> dict[str, Any]:
    reply = STATE.get("reply")
    if reply:
        message = {"role": "assistant", "content": None, **reply["message"]}
        usage = reply.get("usage") or {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        finish = reply.get("finish_reason") or ("tool_calls" if message.get("tool_calls") else "stop")
    else:
        message = {"role": "assistant", "content": content}
        usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        finish = "stop"
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def _deltas() -> list[tuple[dict[str, Any], str | None]]:
    """The streamed deltas of the answer (``reply``'s message, else "OK"), with the last one's finish reason."""
    reply = STATE.get("reply")
    if not reply:
        return [({"content": "O"}, None), ({"content": "K"}, None)]
    message = reply["message"]
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
    text = message.get("content") or ""
    half = max(len(text) // 2, 1)
    deltas += [({"content": piece}, None) for piece in (text[:half], text[half:]) if piece]
    for index, call in enumerate(message.get("tool_calls") or ()):
        arguments = call["function"].get("arguments") or ""
        half = len(arguments) // 2
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
        deltas.append(
            ({"tool_calls": [{**head, "function": {**head["function"], "arguments": arguments[:half]}}]}, None)
        )
        deltas.append(({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]}, None))
    finish = reply.get("finish_reason") or ("tool_calls" if message.get("tool_calls") else "stop")
    deltas.append(({}, finish))
    return deltas


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _send_json(send: Any, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, method = scope["path"], scope["method"]
    body = await _read_body(receive)
    if path == "/_mode" and method == "POST":
        STATE.update(json.loads(body))
        if STATE["mode"] == "hold":
            _gate().clear()
        else:
            _gate().set()
        return await _send_json(send, 200, STATE)
    if path == "/_stats":
        return await _send_json(send, 200, STATE)
    if path in ("/health", "/v1/health"):
        return await _send_json(send, 200 if STATE["mode"] in ("ok", "hold") else 503, {"status": STATE["mode"]})
    if path == "/v1/models":
        return await _send_json(send, 200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})
    if path not in ANSWERS or method != "POST":
        return await _send_json(send, 404, {"error": {"message": "not found"}})
    legacy = path == "/v1/completions"  # (legacy) completions: a prompt, answered as text
    STATE["requests"] += 1
    if isinstance(STATE.get("bodies"), list):
        STATE["bodies"].append(json.loads(body or b"{}"))
    if isinstance(STATE.get("log"), list):
        if legacy:
            STATE["log"].append(str(json.loads(body or b"{}").get("prompt", "")))
        elif path in ("/v1/embeddings", "/v1/rerank"):
            request = json.loads(body or b"{}")
            STATE["log"].append(str(request.get("input", request.get("query", ""))))
        else:
            messages = json.loads(body or b"{}").get("messages") or [{}]
            STATE["log"].append(str(messages[-1].get("content", "")))
    STATE["in_flight"] += 1
    STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
    try:
        mode = STATE["mode"]
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(float(STATE["delay"]))
        if mode == "hold":
            await _gate().wait()
        if mode == "error":
            return await _send_json(send, int(STATE["status"]), STATE["body"])
        if mode == "error503":
            return await _send_json(send, 503, {"error": {"message": "stub is overloaded"}})
        if mode == "error500":
            return await _send_json(send, 500, {"error": {"message": "stub crashed"}})
        if mode == "reject400":
            return await _send_json(send, 400, {"error": {"message": "prompt is too long for the context"}})
        request = json.loads(body or b"{}")
        model = request.get("model", "stub-model")
        if path == "/v1/embeddings":
            return await _send_json(send, 200, _embeddings(request, model))
        if path == "/v1/rerank":
            return await _send_json(send, 200, _rerank(request, model))
        if legacy:
            return await _text_completion(send, model, bool(request.get("stream")))
        if not request.get("stream"):
            return await _send_json(send, 200, _completion(model))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        broken = (STATE.get("reply") or {}).get("stream_error")
        for delta, finish in _deltas():
            if broken and finish:  # the model server fails before its last chunk
                error = {"error": {"message": broken, "type": "server_error"}}
                return await send({"type": "http.response.body", "body": f"data: {json.dumps(error)}\n\n".encode()})
            chunk = {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await send(
                {"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(), "more_body": True}
            )
        final = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": (STATE.get("reply") or {}).get("usage")
            or {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
        await send({"type": "http.response.body", "body": f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode()})
    finally:
        STATE["in_flight"] -= 1


EMBEDDING_DIMENSIONS = 8


def _vector(item: Any) -> list[float]:
    """A deterministic, non-zero vector of a text or token array (the same text, the same vector:
    ranking by cosine is repeatable)."""
    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    return [(b - 127.5) / 127.5 for b in digest[:EMBEDDING_DIMENSIONS]]


def _embeddings(request: dict[str, Any], model: str) -> dict[str, Any]:
    """llama.cpp's answer to ``/v1/embeddings``: one vector per input, in order, as floats or (asked
    for ``encoding_format: base64``) the base64 of its little-endian float32s; a token per word."""
    inputs = request.get("input")
    single = isinstance(inputs, str) or (isinstance(inputs, list) and all(isinstance(i, int) for i in inputs))
    items = [inputs] if single else list(inputs or [])
    tokens = sum(len(i) if isinstance(i, list) else max(len(str(i).split()), 1) for i in items)
    encode: Any = _packed if request.get("encoding_format") == "base64" else (lambda v: v)
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(_vector(item))} for i, item in enumerate(items)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _packed(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _rerank(request: dict[str, Any], model: str) -> dict[str, Any]:
    """llama.cpp's answer to ``/v1/rerank``: each document's index and score, in no particular order."""
    documents = list(request.get("documents") or [])
    query = str(request.get("query", ""))
    results = [
        {"index": i, "relevance_score": sum(w in str(doc).split() for w in query.split()) / (1 + i)}
        for i, doc in enumerate(documents)
    ]
    tokens = max(len(query.split()), 1) + sum(max(len(str(d).split()), 1) for d in documents)
    return {"model": model, "results": results[::-1], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _text_completion(send: Any, model: str, stream: bool) -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    if not stream:
        answer = {
            "id": "cmpl-stub",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": "OK", "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        }
        return await _send_json(send, 200, answer)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for piece, finish in (("O", None), ("K", None), ("", "stop")):
        chunk: dict[str, Any] = {
            "id": "cmpl-stub",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}],
        }
        if finish:
            chunk["usage"] = usage
        await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18200)
    parser.add_argument("--mode", default="ok", choices=MODES)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    STATE.update(mode=args.mode, delay=args.delay)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
