"""The backend stream's body is split into SSE lines as the spec and httpx's ``aiter_lines`` do
(LF, CRLF or CR, across any chunk boundary), with no bound on a line's length
(apps/inference/backends.py ``_lines``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from apps.inference.backends import _lines


class Body:
    """What ``aiohttp.ClientResponse.content`` offers ``_lines``: the chunks as they arrive."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def lines(*chunks: bytes) -> list[bytes]:
    return [line async for line in _lines(Body(*chunks))]


async def test_lines_end_at_lf_crlf_or_cr():
    assert await lines(b"data: 1\n\ndata: 2\r\n\r\ndata: 3\r\rdata: [DONE]\n\n") == [
        b"data: 1",
        b"",
        b"data: 2",
        b"",
        b"data: 3",
        b"",
        b"data: [DONE]",
        b"",
    ]


@pytest.mark.parametrize("cut", range(1, 22))
async def test_a_line_cut_anywhere_between_chunks_is_whole(cut):
    body = b'data: {"a": 1}\n\ndata: [DONE]\n\n'
    got = [line for line in await lines(body[:cut], body[cut:]) if line]
    assert got == [b'data: {"a": 1}', b"data: [DONE]"]


async def test_a_very_long_line_is_one_line():
    long = b"data: " + b"x" * 1_000_000
    got = await lines(*(long[i : i + 4096] for i in range(0, len(long), 4096)), b"\n\ndata: [DONE]\n\n")
    assert [line for line in got if line] == [long, b"data: [DONE]"]


async def test_a_last_line_without_its_end_is_kept():
    assert await lines(b"data: 1\ndata: 2") == [b"data: 1", b"data: 2"]
