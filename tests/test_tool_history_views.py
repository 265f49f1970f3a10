"""A pre-filled history with an earlier tool exchange is shown with its calls, not as empty.

``messages:`` may hold an assistant message with ``tool_calls`` (content
null) and the tool messages answering it; ``show``, ``export --format md``
and the report show those calls (name, id, pretty arguments) like a step's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_report_browser import browser, css, open_page, page_errors, wait_for

from runner.review.markdown import render_markdown
from runner.review.report import build_report, write_report
from runner.review.show import render_records

__all__ = ["browser"]  # the module's Chromium, a fixture of the report's browser tests

CALL = {
    "id": "call_oslo",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}
RECORD: dict[str, Any] = {
    "id": "history",
    "status": "completed",
    "model": "m",
    "messages": [
        {"role": "user", "content": "Sunny in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_oslo", "content": "snow"},
        {"role": "assistant", "content": "No, snow."},
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": "Still snow."},
    ],
    "turns": [{"index": 0, "message_index": 4, "attempts": [{"attempt": 1, "outcome": "ok"}]}],
}


def test_show_lists_a_prefilled_call_with_its_arguments() -> None:
    lines = list(render_records([RECORD], color=False))
    at = lines.index("▌ assistant · history")
    assert lines[at + 1 : at + 5] == [
        "  → get_weather (call_oslo)",
        "    {",
        '      "city": "Oslo"',
        "    }",
    ]
    assert "(no content)" not in "\n".join(lines)


def test_markdown_lists_a_prefilled_call_with_its_arguments() -> None:
    markdown = render_markdown([RECORD])
    assert "**Assistant** (history)\n\n- call `get_weather` (`call_oslo`)\n" in markdown
    assert '```json\n  {\n    "city": "Oslo"\n  }\n  ```' in markdown
    assert "*(no content)*" not in markdown


def test_the_report_shows_a_prefilled_call(browser: Any, tmp_path: Path) -> None:
    write_report(tmp_path / "h.html", build_report([RECORD], title="h", source="h.jsonl"))
    open_page(browser, tmp_path / "h.html", "#conv=history")
    wait_for(browser, lambda d: css(d, "#chat .msg"))
    (calls,) = css(browser, "#chat .msg.tool-calls")
    assert calls.find_element("css selector", ".role").text.lower() == "assistant · 1 tool call"
    assert calls.find_element("css selector", "pre.args").text == '{\n  "city": "Oslo"\n}'
    assert "(no content)" not in css(browser, "#chat")[0].text
    assert page_errors(browser) == []
