"""The bundled llama.cpp server's command line: every option once (a ModelServer's args replace
the defaults they name), and ``--jinja`` so that the model can call tools."""

from __future__ import annotations

import collections

import pytest

from apps.gpu.llamacpp import BUNDLED_CHAT_TEMPLATE, BUNDLED_MODEL_FILE, server_command
from apps.gpu.supervisor import server_argv
from apps.inference.bundled import ensure_bundled_server
from apps.inference.models import ModelEndpoint


@pytest.fixture(autouse=True)
def fake_install(tmp_path, monkeypatch):
    # The argv only: no llama-server or GGUF needs to exist for it.
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (tmp_path / BUNDLED_MODEL_FILE).write_bytes(b"GGUF")
    monkeypatch.setenv("MEDAI_LLAMA_SERVER", str(binary))
    monkeypatch.setenv("MEDAI_MODEL_PATH", str(tmp_path / BUNDLED_MODEL_FILE))


def options(argv: list[str]) -> collections.Counter[str]:
    return collections.Counter(a.split("=", 1)[0] for a in argv[1:] if a.startswith("-") and not a[1:2].isdigit())


def value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


@pytest.mark.django_db
def test_the_bundled_servers_command_line_names_each_option_once():
    server = ensure_bundled_server(18450, parallel=2, ctx_size=3000, threads=1)
    argv = server_argv(server)
    repeated = {o: n for o, n in options(argv).items() if n > 1}
    assert not repeated, f"repeated options: {repeated} in {argv}"
    assert (value(argv, "--parallel"), value(argv, "--ctx-size"), value(argv, "--threads")) == ("2", "3000", "1")
    assert value(argv, "--port") == "18450" and value(argv, "--alias") == "smollm2-135m-instruct"
    assert "--jinja" in argv  # tool calling needs llama.cpp's Jinja chat templates
    assert value(argv, "--chat-template-file") == str(BUNDLED_CHAT_TEMPLATE)  # one that can take tools
    assert BUNDLED_CHAT_TEMPLATE.is_file()


@pytest.mark.django_db
def test_the_demo_bootstrap_registers_a_server_started_with_jinja(tmp_path):
    from apps.inference.demo import bootstrap_demo

    result = bootstrap_demo(llama_port=18451, var_dir=tmp_path, autostart=False)
    server = ModelEndpoint.objects.get(name=result.endpoint_name).servers.get()
    argv = server_argv(server)
    assert "--jinja" in argv and max(options(argv).values()) == 1


def test_extra_arguments_replace_the_defaults_they_name_in_either_spelling():
    argv = server_command(9000, extra=["-np", "3", "-c=4096", "--threads", "2", "--no-jinja", "--seed", "-1"])
    counts = options(argv)
    assert (counts["--parallel"], counts["-np"], counts["--ctx-size"], counts["-c"]) == (0, 1, 0, 1)
    assert "--jinja" not in argv and counts["--no-jinja"] == 1  # the operator's choice wins
    assert counts["--threads"] == 1 and value(argv, "--threads") == "2"
    assert argv[-2:] == ["--seed", "-1"]


def test_the_test_suites_llama_server_is_started_with_jinja():
    argv = server_command(9001, parallel=4, ctx_size=8192, threads=2)
    assert "--jinja" in argv and max(options(argv).values()) == 1


def test_another_model_keeps_its_own_chat_template(tmp_path):
    other = tmp_path / "qwen.gguf"
    other.write_bytes(b"GGUF")
    argv = server_command(9002, other)
    assert "--chat-template-file" not in argv and "--jinja" in argv
    assert "--chat-template-file" not in server_command(9003, extra=["--chat-template", "chatml"])
