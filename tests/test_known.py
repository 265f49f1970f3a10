"""The store's compact table of what an output holds per id: every answer is what was put."""

from __future__ import annotations

import hashlib

import pytest

from runner.transcripts.known import Known, KnownIds

FP_A = "sha256:" + hashlib.sha256(b"a").hexdigest()
FP_B = "sha256:" + hashlib.sha256(b"b").hexdigest()


def test_what_was_put_is_what_is_answered() -> None:
    known = KnownIds()
    known.put("a", "completed", FP_A, "one.yaml")
    known.put("b", "interrupted", FP_B, "two.yaml")
    assert known.get("a") == Known("completed", FP_A, "one.yaml")
    assert known["b"] == Known("interrupted", FP_B, "two.yaml")
    assert known.status("b") == "interrupted"
    assert known.get("c") is None and known.status("c") is None
    assert "a" in known and "c" not in known
    assert len(known) == 2
    with pytest.raises(KeyError):
        known["c"]


def test_putting_an_id_again_replaces_it_in_its_first_place() -> None:
    known = KnownIds()
    for conv_id in ("a", "b", "c"):
        known.put(conv_id, "interrupted", FP_A, "one.yaml")
    known.put("a", "completed", FP_B, "two.yaml")
    assert list(known) == ["a", "b", "c"]
    assert list(known.statuses()) == ["completed", "interrupted", "interrupted"]
    assert known["a"] == Known("completed", FP_B, "two.yaml")
    assert known["b"] == Known("interrupted", FP_A, "one.yaml")


@pytest.mark.parametrize(
    "fingerprint",
    [
        "",
        "sha256:",
        FP_A.upper(),
        "sha256:" + FP_A[7:].upper(),  # the same digest in capitals is another text
        FP_A[:-1],
        FP_A + "0",
        "md5:" + hashlib.md5(b"a").hexdigest(),
        "sha256:" + "zz" * 32,
        "sha256:" + " 0" * 32,  # fromhex would skip the spaces
        FP_A[7:],  # the digits without their prefix
    ],
)
def test_a_fingerprint_spelled_otherwise_is_kept_as_it_is(fingerprint: str) -> None:
    known = KnownIds()
    known.put("a", "completed", fingerprint, "one.yaml")
    known.put("b", "completed", FP_B, "one.yaml")
    assert known["a"].fingerprint == fingerprint
    assert known["b"].fingerprint == FP_B
    known.put("a", "completed", FP_A, "one.yaml")  # and replaced by a usual one
    assert known["a"].fingerprint == FP_A


def test_any_status_and_source_text_is_kept() -> None:
    known = KnownIds()
    known.put("a", "something else", FP_A, "")
    known.put("b", "", FP_A, "dir/ü.yaml")
    assert known["a"] == Known("something else", FP_A, "")
    assert known["b"] == Known("", FP_A, "dir/ü.yaml")
