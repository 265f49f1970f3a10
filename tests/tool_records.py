"""Records of tool-call conversations, built by hand as docs/design/tool-calls.md says."""

from __future__ import annotations

import json
from typing import Any


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A tool call as the API gives it."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_record(answer: str = "It is 18 C in Paris.", city: str = "Paris") -> dict[str, Any]:
    """One turn in two steps: two parallel calls (one with non-JSON arguments), then the answer."""
    calls = [
        call("call_1", "get_weather", json.dumps({"city": city})),
        call("call_2", "get_time", "now?"),
    ]
    return {
        "id": "weather",
        "status": "completed",
        "model": "m",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c":18}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "10:00"},
            {"role": "assistant", "content": answer},
        ],
        "turns": [
            {
                "index": 0,
                "message_index": 0,
                "latency_ms": 20.0,
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                "finish_reason": "stop",
                "attempts": [
                    {"attempt": 1, "outcome": "ok", "step": 0},
                    {"attempt": 1, "outcome": "ok", "step": 1},
                ],
                "steps": [
                    {
                        "step": 0,
                        "message_index": 1,
                        "latency_ms": 10.0,
                        "finish_reason": "tool_calls",
                        "tool_results": [
                            {"tool_call_id": "call_1", "name": "get_weather", "scripted": True},
                            {"tool_call_id": "call_2", "name": "get_time", "scripted": True},
                        ],
                        "reasoning": {"reasoning_content": "I should look it up."},
                    },
                    {
                        "step": 1,
                        "message_index": 4,
                        "latency_ms": 10.0,
                        "finish_reason": "stop",
                        "reasoning": {"reasoning_content": "Now answer."},
                    },
                ],
                "checks": [
                    {
                        "kind": "tool_called",
                        "scope": "turn",
                        "expected": "get_weather",
                        "passed": True,
                    }
                ],
            }
        ],
    }
