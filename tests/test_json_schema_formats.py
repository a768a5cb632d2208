"""Format regexes, checked for no false positives against jsonschema's format checker and the JSON Schema
Test Suite, and for compiling to small automata quickly."""

from __future__ import annotations

import json
import re
import time

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from constrain.automata import regex_to_dfa
from constrain.json_schema.formats import NOT_REGULAR, format_max_length, format_regex

from .shared_data import SHARED

FORMAT_DIR = SHARED / "data" / "json-schema-test-suite" / "tests" / "draft2020-12" / "optional" / "format"

FORMATS = [
    "date",
    "time",
    "date-time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "json-pointer",
    "relative-json-pointer",
    "uri-template",
]

# The draft's own checker: a bare FormatChecker() holds the *draft 3* "time" (HH:MM:SS, no offset).
CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER

# Suite-valid strings the regexes knowingly reject (a regular subset, or the checker disagrees).
KNOWN_MISSES = {
    "date-time": 2,  # leap seconds: the checker (rfc3339-validator) rejects ":60"
    "time": 6,  # same
    "hostname": 15,  # A-labels (xn--): Punycode validity is out of reach
    "idn-hostname": 23,  # U-labels and A-labels: IDNA 2008 rules are out of reach
    "iri": 4,  # beyond the BMP, "::" with fewer than 7 groups, "V1.fe": the checker rejects them
    "relative-json-pointer": 1,  # "100": the checker rejects a digit after a 0
    "uri-template": 2,  # "{%41}", "{v:1000}": the checker (uri-template) rejects them
}


def accepts(name: str, text: str) -> bool:
    regex = format_regex(name)
    assert regex is not None
    limit = format_max_length(name)
    return re.fullmatch(regex, text) is not None and (limit is None or len(text) <= limit)


def _suite_cases(name: str) -> list[tuple[str, bool]]:
    path = FORMAT_DIR / f"{name}.json"
    if not path.exists():
        pytest.skip(f"../shared is absent (no {path})")
    cases = []
    for group in json.loads(path.read_text()):
        if group["schema"].get("format") != name:
            continue
        cases += [(t["data"], t["valid"]) for t in group["tests"] if isinstance(t["data"], str)]
    return cases


@pytest.mark.parametrize("name", FORMATS)
def test_suite_no_false_positives_and_coverage(name: str) -> None:
    cases = _suite_cases(name)
    dfa = regex_to_dfa(format_regex(name))  # type: ignore[arg-type]
    limit = format_max_length(name)
    missed = []
    for text, valid in cases:
        ours = accepts(name, text)
        in_dfa = dfa.matches(text.encode("utf-8", "surrogatepass")) and (limit is None or len(text) <= limit)
        assert in_dfa == ours, (name, text)
        if ours:
            assert valid, f"{name}: accepts {text!r}, which the suite says is invalid"
            assert CHECKER.conforms(text, name), f"{name}: accepts {text!r}, which jsonschema rejects"
        elif valid:
            missed.append(text)
    assert len(missed) == KNOWN_MISSES.get(name, 0), (name, missed)


_WIDE_RANGE = re.compile(
    r"(\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}))-(\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}))"
)


def _narrow(match: re.Match[str]) -> str:
    lo, hi = (int(g[2:], 16) for g in match.groups())
    if hi - lo < 64:
        return match.group()
    mid = (lo + hi) // 2
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ((lo, lo + 15), (mid, mid + 15), (hi - 15, hi)))


def sampling_regex(regex: str) -> str:
    """The regex with each wide code point range cut to its two ends and its middle (16 each).

    Hypothesis samples the full ranges about 50 times slower (minutes for idn-email); the characters
    inside such a range play the same part for the checker, and the cut keeps the edges.
    """
    return _WIDE_RANGE.sub(_narrow, regex)


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_strings_pass_the_checker(name: str, data: st.DataObject) -> None:
    regex = format_regex(name)
    assert regex is not None
    text = data.draw(st.from_regex(sampling_regex(regex), fullmatch=True))
    assert re.fullmatch(regex, text)
    limit = format_max_length(name)
    if limit is not None and len(text) > limit:
        return  # outside the language: the caller intersects with the length limit
    assert CHECKER.conforms(text, name), f"{name}: {text!r} matches the regex but jsonschema rejects it"


@pytest.mark.parametrize("name", FORMATS)
def test_compiles_fast_and_small(name: str) -> None:
    regex = format_regex(name)
    assert regex is not None
    t0 = time.perf_counter()
    dfa = regex_to_dfa(regex)
    elapsed = time.perf_counter() - t0
    assert dfa.num_states < 400, (name, dfa.num_states)
    assert elapsed < 1.0, (name, elapsed)


TABLE = [
    (
        "date",
        ["2024-02-29", "2000-02-29", "0400-02-29", "0001-01-01"],
        ["1900-02-29", "0000-01-01", "2023-02-29"],
    ),
    ("date-time", ["2024-01-31T23:59:59.5+05:30", "2024-01-31t00:00:00z"], ["2024-01-31T23:59:60Z"]),
    ("time", ["00:00:00Z", "23:59:59-23:59"], ["24:00:00Z", "12:00:00", "12:00:00+24:00"]),
    ("duration", ["P1Y2M3DT4H5M6S", "P2W", "PT0S"], ["P1Y2D", "P", "PT", "P1W1D", "P1.5D"]),
    ("ipv4", ["0.0.0.0", "255.255.255.255"], ["256.0.0.0", "01.2.3.4", "1.2.3"]),
    ("ipv6", ["::", "1::", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8"], ["1:2:3:4:5:6:7:8:9", ":::", "::1%eth0"]),
    ("hostname", ["a", "a-b.c", "x" * 63 + ".com"], ["a.", "-a", "x" * 64, "ab--c", "a..b"]),
    ("email", ["a.b@c.d", '"a b"@c', "x@[IPv6:::1]"], ["a..b@c", "@c", "a@", "a b@c"]),
    ("uuid", ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567e89b12d3a456426614174000"]),
    ("json-pointer", ["", "/a~0b/~1", "/"], ["a", "/~2"]),
    ("relative-json-pointer", ["0", "1#", "10/a"], ["01", "#", "-1/a"]),
    ("uri", ["http://x/y?z#w", "urn:isbn:1"], ["/a", "a b:c"]),
    ("uri-reference", ["", "../a", "#f"], ["a b", "%zz"]),
    ("uri-template", ["/users/{id}{?q,page}", "{+path:10}"], ["{", "{a b}"]),
]


@pytest.mark.parametrize(("name", "accepted", "rejected"), TABLE)
def test_table(name: str, accepted: list[str], rejected: list[str]) -> None:
    for text in accepted:
        assert accepts(name, text), (name, text)
        assert CHECKER.conforms(text, name), (name, text)
    for text in rejected:
        assert not accepts(name, text), (name, text)


def test_hostname_length_limit_is_separate() -> None:
    long_name = ".".join(["a" * 63] * 4)  # 255 characters: labels are fine, the total is not
    assert re.fullmatch(format_regex("hostname"), long_name)  # type: ignore[arg-type]
    assert format_max_length("hostname") == 253
    assert not CHECKER.conforms(long_name, "hostname")


def test_checker_has_the_format_extras() -> None:
    """Without the extras jsonschema passes every string for these formats and the tests prove nothing."""
    missing = {"hostname", "uri", "iri", "date-time", "duration", "json-pointer", "uri-template"} - set(
        CHECKER.checkers
    )
    assert not missing, f"install jsonschema[format-nongpl] (no checker for {sorted(missing)})"


def test_non_regular_and_unknown_formats_have_no_regex() -> None:
    assert format_regex("regex") is None
    assert "regex" in NOT_REGULAR
    assert format_regex("no-such-format") is None
    assert format_max_length("date") is None
