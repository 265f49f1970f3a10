"""The HTML report in a real browser: Debian's headless Chromium driven by Selenium.

Nothing is downloaded: Selenium is given the paths of Debian's ``chromium``
and ``chromedriver``, so Selenium Manager never runs (the ``browser`` fixture
makes sure). Without them the tests are skipped on a developer's machine and
fail under CI, which must run them (``.ci/run`` installs both).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import httpx
import pytest
from helpers import ChatServer, error
from tool_records import tool_record
from virtualtime import clock, run_virtual

from runner.http.mock import answer
from runner.review.report import build_comparison, build_report, write_report
from runner.run.engine import RunConfig, run_batch
from runner.spec.loader import load_conversations
from runner.transcripts.reader import read_transcript
from runner.transcripts.totals import totals as totals_of

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 20.0
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'

CONVERSATIONS = textwrap.dedent(
    """\
    defaults:
      system: You are a concise assistant.
    conversations:
      - id: capital
        turns:
          - content: What is the capital of France?
            expect: {min_chars: 5}
          - Tell me more about it.
      - id: fruit-bowl
        expect_final: {contains: banana}
        turns: [Describe a fruit bowl.]
      - id: weather
        turns: [Is it raining?, What about tomorrow?, And next week?]
      - id: haiku
        turns: [Write a haiku about retries.]
    """
)


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return f"{path} not found (apt-get install -y {package})"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module; never lets Selenium Manager fetch anything."""
    missing = browser_missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"mtrun-chromium-{os.getpid()}"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})

    def no_manager(*args: object, **kwargs: object) -> dict[str, str]:
        raise AssertionError("Selenium Manager would look for (and download) a browser")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SeleniumManager, "binary_paths", no_manager)
        driver = webdriver.Chrome(
            options=options, service=Service(executable_path=str(CHROMEDRIVER))
        )
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real mock run (plus a hostile record), a second run that regressed, and their pages."""
    folder = tmp_path_factory.mktemp("reports")
    (folder / "batch.yaml").write_text(CONVERSATIONS)
    conversations = load_conversations([str(folder / "batch.yaml")])

    asyncio.run(
        run_batch(conversations, RunConfig(output=folder / "base.jsonl", base_url="mock://"))
    )
    base = read_transcript(folder / "base.jsonl")
    hostile = json.loads(json.dumps(next(r for r in base if r["id"] == "capital")))
    hostile["id"] = "hostile"
    hostile["messages"][hostile["turns"][0]["message_index"] + 1]["content"] = HOSTILE
    write_report(
        folder / "run.html", build_report([*base, hostile], title="base run", source="base.jsonl")
    )

    throttled: list[int] = []

    def respond(body: dict[str, Any], n: int) -> httpx.Response | None:
        first = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if first == "Is it raining?":
            return error(400, "model not found")
        if first == "What is the capital of France?" and not throttled:
            throttled.append(n)
            return error(429, "Rate limit reached", **{"retry-after": "1"})
        if first == "Write a haiku about retries.":
            reply = answer(body)
            reply["choices"][0]["message"]["content"] = "Retry, wait, retry.\nBackoff grows."
            return httpx.Response(200, json=reply)
        return None

    server = ChatServer(respond)
    config = RunConfig(
        output=folder / "new.jsonl", base_url="http://127.0.0.1:9/v1", transport=server.transport
    )
    run_virtual(run_batch(conversations, config, sleep=asyncio.sleep, clock=clock))
    new = read_transcript(folder / "new.jsonl")
    write_report(
        folder / "compare.html",
        build_comparison(base, new, title="pr", base_source="base.jsonl", new_source="new.jsonl"),
    )

    odd: list[dict[str, Any]] = [
        {"id": "bare"},
        {
            "id": "parts",
            "status": "interrupted",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": None},
            ],
            "turns": [{"index": 0, "message_index": 1, "attempts": []}, {"index": 1}],
            "error": {"kind": "interrupted", "message": "stopped by Ctrl-C"},
        },
        {"id": "weird", "status": "unheard-of", "turns": [None, 3], "messages": [None, "x"]},
    ]
    write_report(folder / "odd.html", build_report(odd, title="odd", source="odd.jsonl"))

    big = [dict(hostile, id=f"conversation-{k:05d}", status="completed") for k in range(10_000)]
    write_report(folder / "big.html", build_report(big, title="big", source="big.jsonl"))
    return {
        "run": folder / "run.html",
        "compare": folder / "compare.html",
        "big": folder / "big.html",
        "odd": folder / "odd.html",
    }


def open_page(browser: Any, path: Path, fragment: str = "") -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(path.as_uri() + fragment)
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.execute_script("return document.body.dataset.ready === 'true'")
    )


def wait_for(browser: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S).until(condition)


def css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, selector))


def row_ids(browser: Any) -> list[str]:
    """The ids of the rows in the page, read at once (the table repaints as it scrolls)."""
    ids = browser.execute_script(
        "return Array.from(document.querySelectorAll('tr.row'), r => r.cells[0].textContent)"
    )
    return list(ids)


def page_errors(browser: Any) -> list[str]:
    """Console errors, CSP violations included."""
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_overview_shows_totals_and_the_table_filters_and_sorts(
    browser: Any, reports: dict[str, Path]
) -> None:
    open_page(browser, reports["run"])

    totals = {
        tile.get_attribute("data-total"): tile.find_element("css selector", ".value").text
        for tile in css(browser, "#totals .tile")
    }
    assert totals["conversations"] == "5"
    assert totals["completed"] == "4"
    assert totals["checks_failed"] == "1"
    assert totals["failed"] == "0"
    assert totals["turns"] == "9"
    assert css(browser, "#run-meta")[0].text.count("mock://offline") == 1
    assert row_ids(browser) == ["capital", "fruit-bowl", "haiku", "hostile", "weather"]
    assert css(browser, "#count")[0].text == "5 of 5 conversations"

    css(browser, "#search")[0].send_keys("weath")
    wait_for(browser, lambda d: row_ids(d) == ["weather"])
    assert css(browser, "#count")[0].text == "1 of 5 conversations"
    css(browser, "#search")[0].clear()
    css(browser, "#search")[0].send_keys("France")
    wait_for(browser, lambda d: row_ids(d) == [])
    css(browser, "#search-messages")[0].click()
    wait_for(browser, lambda d: row_ids(d) == ["capital", "hostile"])
    css(browser, "#search")[0].clear()
    css(browser, "#search")[0].send_keys(" ")
    wait_for(browser, lambda d: len(row_ids(d)) == 5)

    from selenium.webdriver.support.ui import Select

    Select(css(browser, "#status-filter")[0]).select_by_value("checks_failed")
    wait_for(browser, lambda d: row_ids(d) == ["fruit-bowl"])
    Select(css(browser, "#status-filter")[0]).select_by_value("")

    tokens_header = css(browser, "th[data-key=tokens]")[0]
    tokens_header.click()
    assert tokens_header.get_attribute("aria-sort") == "descending"
    assert row_ids(browser)[0] == "weather"  # three turns: the most tokens
    tokens_header.click()
    assert tokens_header.get_attribute("aria-sort") == "ascending"
    assert row_ids(browser)[-1] == "weather"
    assert page_errors(browser) == []


def test_a_conversation_opens_as_a_chat_with_its_checks(
    browser: Any, reports: dict[str, Path]
) -> None:
    open_page(browser, reports["run"])
    next(r for r in css(browser, "tr.row") if r.text.startswith("capital")).click()
    wait_for(browser, lambda d: css(d, "#conversation"))

    assert css(browser, "#overview")[0].is_displayed() is False
    roles = [m.get_attribute("data-role") for m in css(browser, "#chat .msg")]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert css(browser, "#chat .msg.user")[0].text.endswith("What is the capital of France?")
    check = css(browser, "#chat .check.pass")[0]
    assert "min_chars" in check.text and "expected" in check.text

    css(browser, "#back")[0].click()
    wait_for(browser, lambda d: css(d, "#overview")[0].is_displayed())
    next(r for r in css(browser, "tr.row") if r.text.startswith("fruit-bowl")).click()
    wait_for(browser, lambda d: css(d, "#chat .check.fail"))
    assert "banana" in css(browser, "#chat .check.fail")[0].text


def test_a_hostile_reply_is_shown_as_text_and_never_runs(
    browser: Any, reports: dict[str, Path], tmp_path: Path
) -> None:
    open_page(browser, reports["run"], "#conv=hostile")
    wait_for(browser, lambda d: css(d, "#chat .msg.assistant"))

    assert css(browser, "#chat .msg.assistant .body")[0].text == HOSTILE
    assert css(browser, "#chat img") == []
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert page_errors(browser) == []

    shot = tmp_path / "conversation.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_charts_are_drawn_as_svg(browser: Any, reports: dict[str, Path]) -> None:
    open_page(browser, reports["run"])

    assert len(css(browser, "svg#chart-status rect")) == 2 * 4
    assert len(css(browser, "svg#chart-latency g.latency-box")) == 3  # turns 1 to 3
    assert len(css(browser, "svg#chart-tokens rect.bar-prompt")) == 3
    assert len(css(browser, "svg#chart-tokens rect.bar-completion")) == 3


def test_the_comparison_lists_the_regression_first(
    browser: Any, reports: dict[str, Path], tmp_path: Path
) -> None:
    open_page(browser, reports["compare"])

    regressions = css(browser, "#regressions li")
    assert [r.get_attribute("data-id") for r in regressions] == ["weather"]
    assert "model not found" in regressions[0].text
    assert row_ids(browser)[0] == "weather"
    assert css(browser, "tr.row")[0].find_element("css selector", ".badge").text == "regressed"
    tiles = {
        t.get_attribute("data-total"): t.text.split("\n")[0]
        for t in css(browser, "#diff-summary .tile")
    }
    assert tiles["regressed"] == "1"
    assert tiles["changed"] == "1"

    regressions[0].click()
    wait_for(browser, lambda d: css(d, "#conversation"))
    assert "model not found" in css(browser, "#conversation .error-box")[0].text

    open_page(browser, reports["compare"], "#conv=haiku")
    wait_for(browser, lambda d: css(d, ".cmp-turn.differs"))
    assert css(browser, "[data-side=new] .body")[0].text == "Retry, wait, retry.\nBackoff grows."
    assert "Backoff" in " ".join(e.text for e in css(browser, "[data-side=new] ins.d"))
    assert "offline reply" in " ".join(e.text for e in css(browser, "[data-side=base] del.d"))
    assert page_errors(browser) == []

    open_page(browser, reports["compare"], "#conv=capital")
    wait_for(browser, lambda d: css(d, ".cmp-turn"))
    shot = tmp_path / "comparison.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000


def test_records_with_missing_fields_render_without_errors(
    browser: Any, reports: dict[str, Path]
) -> None:
    open_page(browser, reports["odd"])
    assert sorted(row_ids(browser)) == ["bare", "parts", "weird"]

    for cid in ("bare", "parts", "weird"):
        open_page(browser, reports["odd"], f"#conv={cid}")
        wait_for(browser, lambda d: css(d, "#conversation"))
    open_page(browser, reports["odd"], "#conv=parts")
    bodies = [b.text for b in css(browser, "#chat .msg .body")]
    assert bodies[0] == "Be kind."
    assert bodies[1].startswith("[image_url] ")
    assert bodies[2] == "(no content)"
    assert "stopped by Ctrl-C" in css(browser, ".error-box.interrupted")[0].text
    assert page_errors(browser) == []


def test_ten_thousand_conversations_open_and_scroll(
    browser: Any, reports: dict[str, Path], tmp_path: Path
) -> None:
    open_page(browser, reports["big"])

    assert css(browser, "#count")[0].text == "10,000 of 10,000 conversations"
    rendered = row_ids(browser)
    assert rendered[0] == "conversation-00000"
    assert len(rendered) < 200  # only the rows in view are in the page
    browser.execute_script(
        "const s = document.getElementById('conversations-scroll'); s.scrollTop = s.scrollHeight;"
    )
    wait_for(browser, lambda d: "conversation-09999" in row_ids(d))
    css(browser, "#search")[0].send_keys("conversation-0424")
    wait_for(browser, lambda d: len(row_ids(d)) == 10)

    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "overview.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    assert page_errors(browser) == []


def test_the_comparison_says_when_the_prompt_changed(browser: Any, tmp_path: Path) -> None:
    def run(country: str, answer: str) -> dict[str, Any]:
        return {
            "id": "quiz",
            "status": "completed",
            "messages": [
                {"role": "user", "content": f"What is the capital of {country}?"},
                {"role": "assistant", "content": answer},
            ],
            "turns": [{"index": 0, "message_index": 0, "latency_ms": 5.0}],
        }

    gone = {**run("Spain", "Madrid."), "id": "gone"}
    page = build_comparison(
        [run("France", "Paris."), gone],
        [run("Italy", "Rome.")],
        title="prompts",
        base_source="b",
        new_source="n",
    )
    write_report(tmp_path / "prompts.html", page)
    open_page(browser, tmp_path / "prompts.html")
    (removed,) = css(browser, "#diff-summary .tile[data-total=removed]")
    assert "bad" in removed.get_attribute("class").split()
    assert [li.text.split("\n")[0] for li in css(browser, "#removed li")] == ["gone"]
    before_the_table = browser.execute_script(
        "return !!(document.getElementById('removed').compareDocumentPosition("
        "document.querySelector('#overview table')) & Node.DOCUMENT_POSITION_FOLLOWING)"
    )
    assert before_the_table  # listed with the regressions, not after everything else

    open_page(browser, tmp_path / "prompts.html", "#conv=quiz")
    wait_for(browser, lambda d: css(d, ".cmp-turn.differs"))
    label = css(browser, ".cmp-turn .turn-label")[0].text
    assert label.startswith("Turn 1 · the prompt changed · answers differ")
    change = css(browser, ".prompt-change")
    assert len(change) == 1
    assert [e.text for e in css(browser, ".prompt-change [data-side=base] del.d")] == ["France?"]
    assert [e.text for e in css(browser, ".prompt-change [data-side=new] ins.d")] == ["Italy?"]
    assert "Prompts changed\nturn 1" in css(browser, "#conversation .panel")[0].text
    assert page_errors(browser) == []


def test_token_totals_and_rows_include_judge_tokens(browser: Any, tmp_path: Path) -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}
    judge = {"prompt_tokens": 250, "completion_tokens": 25, "total_tokens": 275}
    check = {"kind": "judge", "scope": "turn", "passed": True, "expected": "r", "seen": "a"}
    record = {
        "id": "judged",
        "status": "completed",
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "turns": [
            {
                "index": 0,
                "message_index": 0,
                "usage": usage,
                "checks": [{**check, "details": {"model": "m", "usage": judge}}],
            }
        ],
        "totals": {"turns": 1, **usage},
    }
    write_report(tmp_path / "judged.html", build_report([record], title="j", source="j.jsonl"))
    open_page(browser, tmp_path / "judged.html")
    (tile,) = css(browser, "#totals .tile[data-total=tokens]")
    assert tile.text.split("\n") == [
        "382",
        "tokens",
        "350 prompt · 32 completion · 275 by the judge",
    ]
    cells = browser.execute_script(
        "return Array.from(document.querySelector('tr.row').cells, c => c.textContent)"
    )
    assert "382" in cells
    open_page(browser, tmp_path / "judged.html", "#conv=judged")
    wait_for(browser, lambda d: css(d, "#chat .check"))
    assert "judge tokens: 275 tokens (250 in, 25 out)" in css(browser, "#chat .check")[0].text
    assert page_errors(browser) == []


def test_a_tool_conversation_shows_its_steps_with_reasoning_collapsed(
    browser: Any, tmp_path: Path
) -> None:
    record = tool_record()
    record["messages"][2]["content"] = HOSTILE
    record["messages"][1]["tool_calls"][1]["function"]["name"] = HOSTILE
    write_report(tmp_path / "tools.html", build_report([record], title="t", source="t.jsonl"))
    open_page(browser, tmp_path / "tools.html", "#conv=weather")
    wait_for(browser, lambda d: css(d, "#chat .msg.tool"))

    roles = [m.get_attribute("data-role") for m in css(browser, "#chat .msg")]
    assert roles == ["user", "assistant", "tool", "tool", "assistant"]
    calls = css(browser, "#chat .msg.tool-calls .call")
    assert [c.get_attribute("data-tool") for c in calls] == ["get_weather", HOSTILE]
    args = [c.find_element("css selector", "pre.args").text for c in calls]
    assert args == ['{\n  "city": "Paris"\n}', "now?"]
    assert css(browser, "#chat .msg.tool .role")[0].text.lower() == "tool · get_weather (call_1)"
    assert css(browser, "#chat .msg.tool .body")[0].text == HOSTILE
    assert css(browser, "#chat .msg.assistant .body")[-1].text == "It is 18 C in Paris."
    reasoning = css(browser, "#chat details.reasoning")
    assert len(reasoning) == 2
    attempts = [a.text.split(" ·")[0] for a in css(browser, "#chat .attempt")]
    assert attempts == ["step 1 #1 ok", "step 2 #1 ok"]
    assert all(r.get_attribute("open") is None for r in reasoning)
    assert not reasoning[0].find_element("css selector", "pre").is_displayed()
    reasoning[0].find_element("css selector", "summary").click()
    assert reasoning[0].find_element("css selector", "pre").text == "I should look it up."
    assert css(browser, "#chat img") == []
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert page_errors(browser) == []


def test_the_comparison_shows_both_runs_tool_steps(browser: Any, tmp_path: Path) -> None:
    page = build_comparison(
        [tool_record()], [tool_record(city="Lyon")], title="c", base_source="b", new_source="n"
    )
    write_report(tmp_path / "tools-compare.html", page)
    open_page(browser, tmp_path / "tools-compare.html", "#conv=weather")
    wait_for(browser, lambda d: css(d, ".side .msg.tool-calls"))
    base, new = (
        css(browser, f".side[data-side={side}] .msg.tool-calls pre.args")[0].text
        for side in ("base", "new")
    )
    assert (base, new) == ('{\n  "city": "Paris"\n}', '{\n  "city": "Lyon"\n}')
    label = css(browser, ".cmp-turn.differs .turn-label")[0].text
    assert label.startswith("Turn 1 · tool calls differ at step 1 · same answer")
    assert len(css(browser, ".side details.reasoning")) == 4
    assert all(r.get_attribute("open") is None for r in css(browser, ".side details.reasoning"))
    assert page_errors(browser) == []


def counted(cid: str, turns: int = 1, attempts: int = 1) -> dict[str, Any]:
    """A completed record of ``turns`` turns of 1 token each, each answered at ``attempts``."""
    tried = [
        {"attempt": n + 1, "outcome": "ok" if n + 1 == attempts else "http_429", "latency_ms": 10.0}
        for n in range(attempts)
    ]
    usage = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}
    record = dict(
        helpers.record(0),
        id=cid,
        messages=[
            m
            for i in range(turns)
            for m in ({"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"})
        ],
        turns=[
            {
                "index": i,
                "message_index": 2 * i,
                "latency_ms": 10.0,
                "usage": usage,
                "finish_reason": "stop",
                "attempts": tried,
            }
            for i in range(turns)
        ],
    )
    record["totals"] = totals_of(record).as_dict()  # as the writer records them
    return record


def open_report(browser: Any, path: Path, records: list[dict[str, Any]], at: str = "") -> None:
    write_report(path, build_report(records, title="t", source="t.jsonl"))
    open_page(browser, path, at)


def texts(browser: Any, selector: str) -> list[str]:
    """The text of every element ``selector`` finds, SVG titles included."""
    found = browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent.trim())",
        selector,
    )
    return list(found)


@pytest.mark.parametrize(
    ("count", "said"),
    [
        (1, ("1 of 1 conversation", "1 attempt", "1 answer", "1 attempt · 0 retries")),
        (2, ("2 of 2 conversations", "4 attempts", "2 answers", "2 attempts · 1 retry")),
    ],
)
def test_the_page_counts_one_of_a_kind_in_the_singular(
    browser: Any, tmp_path: Path, count: int, said: tuple[str, str, str, str]
) -> None:
    records = [counted(f"c{i}", attempts=count) for i in range(count)]
    open_report(browser, tmp_path / "run.html", records)
    assert texts(browser, "#count") == [said[0]]
    assert texts(browser, "#totals .tile[data-total=retries] .sub") == [said[1]]
    assert texts(browser, ".latency-box title")[0].startswith(f"Turn 1: {said[2]}; median ")
    open_page(browser, tmp_path / "run.html", "#conv=c0")
    wait_for(browser, lambda d: css(d, "#conversation"))
    totals = texts(browser, "#conversation dl.meta dd")
    assert totals[6] == f"1 turn · 1 token · {said[3]}", totals
    assert "1 token (1 in, 0 out)" in texts(browser, "#chat .facts span")
    assert page_errors(browser) == []


@pytest.mark.parametrize(
    ("turns", "said"), [(61, "1 later turn number"), (62, "2 later turn numbers")]
)
def test_the_turns_the_charts_leave_out_are_counted_in_the_singular_for_one(
    browser: Any, tmp_path: Path, turns: int, said: str
) -> None:
    open_report(browser, tmp_path / "long.html", [counted("c0", turns=turns)])
    assert f"{said} not drawn." in texts(browser, ".chart-note")


@pytest.mark.parametrize(("calls", "said"), [(1, "1 tool call"), (2, "2 tool calls")])
def test_a_step_counts_its_tool_calls_in_the_singular_for_one(
    browser: Any, tmp_path: Path, calls: int, said: str
) -> None:
    record = tool_record()
    if calls == 1:
        record["messages"][1]["tool_calls"] = record["messages"][1]["tool_calls"][:1]
        del record["messages"][3]  # the second call's result
    open_report(browser, tmp_path / "tools.html", [record], "#conv=weather")
    wait_for(browser, lambda d: css(d, "#chat .msg.tool-calls"))
    assert texts(browser, "#chat .msg.tool-calls .role") == [f"assistant · step 1 · {said}"]
