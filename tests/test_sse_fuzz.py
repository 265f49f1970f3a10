"""The SSE reader against generated streams: every grammar the spec allows, every cut.

Three generators: (1) event streams from the SSE grammar (CR, LF and CRLF line
ends, several ``data:`` lines per event, comments, other and unknown fields,
a BOM, text with U+2028 / U+2029 / U+0085), fed in arbitrary pieces, even
inside a UTF-8 sequence or between CR and LF; (2) chat-completion chunk
sequences, with choice-less, usage-only and empty chunks; (3) a real stream
cut at every byte offset. The reader must give the events the spec defines,
never take a choice-less or unfinished stream for an answer, and never give
a wrong one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runner.errors import TransientAPIError
from runner.http.client import ChatClient
from runner.http.mock import answer, stream_events
from runner.http.streaming import SSEParser, StreamAnswer

FUZZ = settings(
    database=None, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
ODD = '\u2028\u2029\u0085\x0b\x0c\x1c\x1d\x1e\ufeff é✓😀"\\{}:'
EOL = st.sampled_from(["\n", "\r", "\r\n"])
LINE_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))
    | st.sampled_from(ODD),
    max_size=20,
)
FIELD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=6).filter(
    lambda name: name != "data"
)


@st.composite
def noise_line(draw: st.DrawFn) -> str:
    """A line the reader must ignore: a comment, or a field other than ``data``."""
    kind = draw(st.sampled_from(["comment", "field", "bare-field", "event", "id", "retry"]))
    if kind == "comment":
        return ":" + draw(LINE_TEXT)
    if kind == "bare-field":
        return draw(FIELD)
    name = draw(FIELD) if kind == "field" else kind
    return f"{name}:{draw(LINE_TEXT)}"


def data_line(value: str, space: bool) -> str:
    if value == "" and not space:
        return "data"  # a field without a colon: an empty value
    return "data:" + (" " if space or value.startswith(" ") else "") + value


@st.composite
def event_stream(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """The bytes of a generated stream, and the data of the events it must give."""
    lines: list[str] = []
    expected: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        values = draw(st.lists(LINE_TEXT, max_size=4))
        body = [data_line(v, draw(st.booleans())) for v in values]
        for _ in range(draw(st.integers(0, 3))):
            body.insert(draw(st.integers(0, len(body))), draw(noise_line()))
        lines += [*body, ""]
        if values:
            expected.append("\n".join(values))
    tail = draw(st.lists(st.one_of(noise_line(), st.builds(data_line, LINE_TEXT, st.booleans()))))
    lines += tail  # an event the stream never ended: the spec drops it
    text = ""
    previous = ""
    for line in lines:
        end = draw(EOL)
        if previous == "\r" and line == "" and end == "\n":
            end = "\r\n"  # CR then LF would be one line end, not an empty line
        text += line + end
        previous = end
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode("utf-8"), expected


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[str]:
    parser = SSEParser()
    events: list[str] = []
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        events += parser.feed(data[start:cut])
        start = cut
    return events


@FUZZ
@given(stream=event_stream(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
@example(
    stream=(b"\xef\xbb\xbfdata:  two\r\rdata\ndata:\n\n: c\r\nid\r\n\r\n", [" two", "\n"]), cuts=[5]
)
def test_the_parser_gives_the_events_the_spec_defines(
    stream: tuple[bytes, list[str]], cuts: list[int]
) -> None:
    data, expected = stream
    assert feed_in_pieces(data, cuts) == expected


@FUZZ
@given(stream=event_stream())
def test_byte_by_byte_is_the_same_as_all_at_once(stream: tuple[bytes, list[str]]) -> None:
    data, expected = stream
    parser = SSEParser()
    assert [e for i in range(len(data)) for e in parser.feed(data[i : i + 1])] == expected


# --- chunk sequences: choice-less, usage-only, empty ---------------------------------

CONTENT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(ODD))
CHUNK = st.one_of(
    st.builds(lambda text: {"choices": [{"index": 0, "delta": {"content": text}}]}, CONTENT),
    st.just({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
    st.just({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    st.just({"choices": [], "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
    st.just({"choices": []}),
    st.just({}),
    st.just({"choices": [], "prompt_filter_results": [{"prompt_index": 0}]}),
)


def serialise(chunks: list[dict[str, Any]], done: bool, eol: str) -> bytes:
    events = [json.dumps(c, ensure_ascii=False) for c in chunks] + (["[DONE]"] if done else [])
    return "".join(f"data: {e}{eol}{eol}" for e in events).encode()


def read(data: bytes) -> StreamAnswer:
    stream = StreamAnswer()

    async def chunks() -> Any:
        yield data

    asyncio.run(stream.read(chunks()))
    return stream


@FUZZ
@given(chunks=st.lists(CHUNK, max_size=8), done=st.booleans(), eol=EOL)
def test_a_stream_is_an_answer_only_when_it_showed_a_choice_and_finished(
    chunks: list[dict[str, Any]], done: bool, eol: str
) -> None:
    stream = read(serialise(chunks, done, eol))
    choices = [c["choices"][0] for c in chunks if c.get("choices")]
    finished = done or any(c.get("finish_reason") for c in choices)
    try:
        got = stream.answer()
    except TransientAPIError as exc:
        assert exc.kind == ("no_choices" if finished else "stream_cut")
        assert not (finished and choices)
        return
    assert finished and choices
    texts = [c["delta"]["content"] for c in choices if "content" in c["delta"]]
    assert got["choices"][0]["message"]["content"] == ("".join(texts) if texts else None)


# --- a real stream, cut at every byte -------------------------------------------------

REPLY = answer({"model": "m", "messages": [{"role": "user", "content": "Hi ✓ \u2028 there"}]})
REPLY["choices"][0]["message"]["content"] += " — é\u2028\u2029\u0085 😀 end"
WHOLE = REPLY["choices"][0]["message"]["content"]


def real_stream(eol: str) -> tuple[bytes, int]:
    """The offline backend's stream with ``eol`` line ends, and the offset it is whole at."""
    text = stream_events(REPLY, pieces=6).decode().replace("\n", eol)
    finish = '"finish_reason": "stop"'
    end_of_finish = text.index(eol + eol, text.index(finish)) + len(eol) + 1
    return text.encode(), len(text[:end_of_finish].encode())


@pytest.mark.parametrize("eol", ["\n", "\r", "\r\n"], ids=["lf", "cr", "crlf"])
def test_a_real_stream_cut_at_every_byte_is_whole_or_a_transient_error(eol: str) -> None:
    data, whole_at = real_stream(eol)
    for cut in range(len(data) + 1):
        stream = read(data[:cut])
        if cut >= whole_at:
            assert stream.answer()["choices"][0]["message"]["content"] == WHOLE, cut
        else:
            with pytest.raises(TransientAPIError) as info:
                stream.answer()
            assert info.value.kind == "stream_cut", cut


class _Cut(httpx.AsyncByteStream):
    """The first ``cut`` bytes of a body, then a dropped connection or a clean end."""

    def __init__(self, data: bytes, cut: int, drop: bool) -> None:
        self.data, self.cut, self.drop = data, cut, drop

    async def __aiter__(self) -> Any:
        for start in range(0, self.cut, 61):
            yield self.data[start : min(start + 61, self.cut)]
        if self.drop:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message"
            )


@pytest.mark.parametrize("drop", [True, False], ids=["dropped", "clean-end"])
def test_through_the_client_every_cut_is_the_whole_answer_or_a_transient_error(
    drop: bool,
) -> None:
    data, whole_at = real_stream("\r\n")
    headers = {"content-type": "text/event-stream"}
    body = {"model": "m", "messages": [], "stream": True}
    seen: dict[str, int] = {}

    async def go() -> None:
        for cut in range(len(data) + 1):
            transport = httpx.MockTransport(
                lambda r, cut=cut: httpx.Response(
                    200, headers=headers, stream=_Cut(data, cut, drop)
                )
            )
            async with ChatClient("http://127.0.0.1:9/v1", api_key=None, transport=transport) as c:
                try:
                    completion = await c.complete(body)
                except TransientAPIError as exc:
                    assert cut < whole_at, (cut, exc.message)
                    assert exc.kind in ("stream_cut", "connection_dropped"), exc.kind
                    seen[exc.kind] = seen.get(exc.kind, 0) + 1
                else:
                    assert cut >= whole_at and completion.content == WHOLE, cut
                    seen["whole"] = seen.get("whole", 0) + 1

    asyncio.run(go())
    assert seen["whole"] == len(data) + 1 - whole_at
    assert seen.get("connection_dropped" if drop else "stream_cut") == whole_at
