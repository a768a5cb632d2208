"""Numeric ranges and multipleOf over JSON number text, checked against decimal.Decimal and jsonschema."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import jsonschema
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from constrain.automata import regex_to_dfa
from constrain.exceptions import InvalidInputError, UnsupportedSchemaFeature
from constrain.json_schema.multiple_of import multiple_of_dfa
from constrain.json_schema.numbers import (
    NEVER_MATCHES,
    SMALL_EXPONENT_RE,
    number_range_regex,
    small_exponent_dfa,
    small_exponent_multiples_dfa,
)

JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


def in_language(text: str, integer: bool) -> bool:
    """The shared text syntax: JSON number without exponent, never negative zero."""
    if not JSON_NUMBER.fullmatch(text):
        return False
    value = Decimal(text)
    if text.startswith("-") and value == 0:
        return False
    return not integer or value == value.to_integral_value()


def in_range(text: str, lo: Decimal | None, hi: Decimal | None, xlo: bool, xhi: bool) -> bool:
    v = Decimal(text)
    if lo is not None and (v < lo or (xlo and v == lo)):
        return False
    return not (hi is not None and (v > hi or (xhi and v == hi)))


# --- strategies ----------------------------------------------------------------------------------

bounds = st.one_of(
    st.none(),
    st.integers(-1200, 1200),
    st.decimals(-1000, 1000, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from([0, Decimal("0.5"), Decimal("-0.05"), Decimal("10"), Decimal("99.9"), 100, -100]),
)


def _text_of(d: Decimal) -> str:
    return format(d, "f")


number_texts = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,4})(\.[0-9]{1,4})?", fullmatch=True),
    st.from_regex(r"-?(0|[1-9][0-9]{0,3})(\.0{1,3})?", fullmatch=True),
    st.sampled_from(["-0", "-0.0", "0", "0.0", "01", "+1", "1.", ".5", "1e3", "-", "", "00", "-01.5"]),
)


def near(bound: object) -> st.SearchStrategy[str]:
    """Texts at and just around a bound (where off-by-one errors live), padded with trailing zeros."""
    if bound is None:
        return number_texts
    d = Decimal(bound) if not isinstance(bound, Decimal) else bound
    deltas = [Decimal(0), Decimal("0.001"), Decimal("-0.001"), Decimal(1), Decimal(-1), Decimal("0.1")]
    return st.tuples(st.sampled_from(deltas), st.sampled_from(["", "0", "00"])).map(
        lambda p: (lambda t: t + p[1] if "." in t else (t + "." + p[1] if p[1] else t))(_text_of(d + p[0]))
    )


@st.composite
def range_cases(draw: st.DrawFn) -> tuple[object, object, bool, bool, bool, list[str]]:
    lo, hi = draw(bounds), draw(bounds)
    xlo, xhi, integer = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    texts = draw(st.lists(number_texts, min_size=8, max_size=8))
    texts += draw(st.lists(near(lo), min_size=4, max_size=4)) + draw(
        st.lists(near(hi), min_size=4, max_size=4)
    )
    return lo, hi, xlo, xhi, integer, texts


# --- number_range_regex ----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(range_cases())
@example((0, 0, False, False, False, ["0", "0.000", "-0", "-0.0", "0.1"]))
@example((-1, 1, True, True, True, ["-1", "-1.0", "0", "0.0", "-0", "1", "1.0", "0.5"]))
@example((Decimal("0.05"), Decimal("0.051"), False, True, False, ["0.05", "0.0500", "0.0509", "0.051"]))
def test_range_regex_matches_decimal_oracle(case: tuple[object, object, bool, bool, bool, list[str]]) -> None:
    lo, hi, xlo, xhi, integer = case[:5]
    pattern = number_range_regex(lo, hi, exclusive_minimum=xlo, exclusive_maximum=xhi, integer=integer)
    dfa = regex_to_dfa(pattern)
    dlo = None if lo is None else Decimal(lo)  # type: ignore[arg-type]
    dhi = None if hi is None else Decimal(hi)  # type: ignore[arg-type]
    for text in case[5]:
        expected = in_language(text, integer) and in_range(text, dlo, dhi, xlo, xhi)
        assert bool(re.fullmatch(pattern, text)) == expected, (case[:5], text, pattern)
        assert dfa.matches(text.encode()) == expected, (case[:5], text, pattern)


@pytest.mark.parametrize(
    ("kwargs", "accepted", "rejected"),
    [
        (
            {},
            ["0", "1.50", "-0.5", "123456789012345678901234567890"],
            ["-0", "-0.00", "01", "1e3", "+1", "1."],
        ),
        ({"integer": True}, ["0", "-7", "3.000", "10"], ["-0", "-0.0", "3.5", "0.01"]),
        ({"minimum": 1.5, "maximum": 2.25}, ["1.5", "1.50", "2", "2.25", "2.2500"], ["1.49", "2.251", "-2"]),
        ({"minimum": 0, "exclusive_minimum": True}, ["0.0001", "7"], ["0", "0.000", "-1"]),
        ({"maximum": 0, "exclusive_maximum": True}, ["-0.0001", "-7"], ["0", "-0", "-0.0", "1"]),
        ({"minimum": 1.1, "maximum": 1.9, "integer": True}, [], ["1", "2", "1.5"]),
    ],
)
def test_range_table(kwargs: dict[str, object], accepted: list[str], rejected: list[str]) -> None:
    dfa = regex_to_dfa(number_range_regex(**kwargs))  # type: ignore[arg-type]
    for text in accepted:
        assert dfa.matches(text.encode()), (kwargs, text)
    for text in rejected:
        assert not dfa.matches(text.encode()), (kwargs, text)


@pytest.mark.parametrize(
    ("lo", "hi", "xlo", "xhi", "integer"),
    [
        (1, 0, False, False, False),
        (1, 1, True, False, False),
        (0.5, 0.7, False, False, True),
        (3, 3, False, True, True),
    ],
)
def test_empty_range_gives_the_sentinel(lo: float, hi: float, xlo: bool, xhi: bool, integer: bool) -> None:
    r = number_range_regex(lo, hi, exclusive_minimum=xlo, exclusive_maximum=xhi, integer=integer)
    assert r == NEVER_MATCHES
    dfa = regex_to_dfa(r)
    assert not any(dfa.matches(t.encode()) for t in ["0", "1", "0.6", "3", ""])


def test_huge_bounds_stay_small_and_fast() -> None:
    t0 = time.perf_counter()
    cases = [
        (None, 1e308, "1" + "0" * 308, "1" + "0" * 308 + ".0001"),
        (
            -1.7976931348623157e308,
            None,
            "-17976931348623157" + "0" * 292,
            "-17976931348623157" + "0" * 291 + "1",
        ),
        (1e-300, None, "0." + "0" * 299 + "1", "0." + "0" * 300 + "9"),
        (
            None,
            10**60 + 12345678901234567890123,
            str(10**60 + 12345678901234567890123),
            str(10**60) + "1" * 60,
        ),
    ]
    for lo, hi, inside, outside in cases:
        r = number_range_regex(lo, hi)
        assert len(r) < 2500, (lo, hi, len(r))
        dfa = regex_to_dfa(r)
        assert dfa.matches(inside.encode()), (lo, hi, inside)
        assert not dfa.matches(outside.encode()), (lo, hi, outside)
    assert time.perf_counter() - t0 < 10


def test_bad_bounds_raise() -> None:
    with pytest.raises(InvalidInputError):
        number_range_regex(float("inf"))
    with pytest.raises(InvalidInputError):
        number_range_regex(None, True)  # type: ignore[arg-type]


# --- multiple_of_dfa -------------------------------------------------------------------------------

# Small significant parts keep each automaton small (the construction has ~p * (s + 2) states).
divisors = st.one_of(
    st.integers(1, 60),
    st.tuples(st.integers(1, 300), st.integers(-3, 3)).map(lambda p: Decimal(p[0]).scaleb(p[1])),
    st.sampled_from([0.1, 0.01, 2.5, 1e-5, 1e5, 0.0075, Decimal("1E+3"), 20, 40, 1250]),
)


@settings(max_examples=250, deadline=None)
@given(divisors, st.booleans(), st.lists(number_texts, min_size=15, max_size=15), st.integers(-40, 40))
def test_multiple_of_matches_decimal_oracle(m: object, integer: bool, texts: list[str], k: int) -> None:
    dm = Decimal(repr(m)) if isinstance(m, float) else Decimal(m)  # type: ignore[arg-type]
    if dm <= 0:
        return
    dfa = multiple_of_dfa(m, integer=integer)  # type: ignore[arg-type]
    multiples = [format(dm * k, "f"), format(dm * k, "f") + ("0" if "." in format(dm * k, "f") else ".00")]
    for text in texts + multiples:
        expected = in_language(text, integer) and Decimal(text) % dm == 0
        assert dfa.matches(text.encode()) == expected, (m, integer, text)


def test_multiple_of_table() -> None:
    dfa = multiple_of_dfa(0.01)
    assert all(dfa.matches(t.encode()) for t in ["0", "1.23", "-0.01", "5.1000", "100"])
    assert not any(dfa.matches(t.encode()) for t in ["0.001", "-0", "-0.00", "1.2301", "1e2"])
    dfa = multiple_of_dfa(7, integer=True)
    assert all(dfa.matches(t.encode()) for t in ["0", "7", "-14", "700.0"])
    assert not any(dfa.matches(t.encode()) for t in ["7.5", "8", "-0"])
    dfa = multiple_of_dfa(1e5)
    assert dfa.num_states < 20  # trailing zeros of the divisor are counted, not residues
    assert all(dfa.matches(t.encode()) for t in ["0", "100000", "-2300000", "700000.000"])
    assert not any(dfa.matches(t.encode()) for t in ["10000", "100001", "100000.1", "1000000000000000000001"])
    dfa = multiple_of_dfa(20)
    assert all(dfa.matches(t.encode()) for t in ["0", "20", "40", "100", "-120", "1000000"])
    assert not any(dfa.matches(t.encode()) for t in ["10", "30", "110", "20.5"])
    dfa = multiple_of_dfa(Decimal("2.5"))
    assert all(dfa.matches(t.encode()) for t in ["2.5", "5", "-7.50", "0.0"])
    assert not any(dfa.matches(t.encode()) for t in ["1", "2.55"])


def test_multiple_of_too_large_raises_with_pointer() -> None:
    with pytest.raises(UnsupportedSchemaFeature) as info:
        multiple_of_dfa(1234567.891, pointer="#/properties/x/multipleOf")
    assert info.value.keyword == "multipleOf"
    assert info.value.pointer == "#/properties/x/multipleOf"
    with pytest.raises(InvalidInputError):
        multiple_of_dfa(0)


# --- against jsonschema ----------------------------------------------------------------------------

SCHEMAS = [
    {"type": "number", "minimum": -2.5, "exclusiveMaximum": 10},
    {"type": "integer", "exclusiveMinimum": -3, "maximum": 1e3},
    {"type": "number", "multipleOf": 0.25},
    {"type": "integer", "multipleOf": 3, "minimum": 0},
]


def _compile(schema: dict[str, object]) -> tuple[object, object]:
    integer = schema["type"] == "integer"
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    ranged = regex_to_dfa(
        number_range_regex(
            lo,  # type: ignore[arg-type]
            hi,  # type: ignore[arg-type]
            exclusive_minimum="exclusiveMinimum" in schema,
            exclusive_maximum="exclusiveMaximum" in schema,
            integer=integer,
        )
    )
    mult = multiple_of_dfa(schema["multipleOf"], integer=integer) if "multipleOf" in schema else None  # type: ignore[arg-type]
    return ranged, mult


@pytest.mark.parametrize("schema", SCHEMAS)
def test_against_jsonschema(schema: dict[str, object]) -> None:
    ranged, mult = _compile(schema)
    texts = ["-3", "-2.5", "-2.75", "0", "0.25", "0.3", "3", "3.0", "9.75", "10", "1000", "1000.5", "999"]
    for text in texts:
        instance = json.loads(text)  # floats: jsonschema's "integer" check does not accept Decimal
        valid = jsonschema.Draft202012Validator(schema).is_valid(instance)
        ours = ranged.matches(text.encode()) and (mult is None or mult.matches(text.encode()))  # type: ignore[attr-defined]
        assert ours == valid, (schema, text)


@pytest.mark.parametrize(
    ("draft", "validator"), [("4", jsonschema.Draft4Validator), ("7", jsonschema.Draft7Validator)]
)
@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer"},
        {"type": "integer", "minimum": 2, "maximum": 40},
        {"type": "integer", "multipleOf": 3},
    ],
)
def test_integer_with_zero_fraction_follows_the_draft(
    draft: str, validator: type[jsonschema.Validator], schema: dict[str, object]
) -> None:
    """``12.0`` is an integer from draft 6 on, only a number in draft 4: jsonschema's verdict either way."""
    from constrain.json_schema import SchemaOptions, schema_to_dfa

    dfa = schema_to_dfa(schema, SchemaOptions(draft=draft))
    for text in ["12", "12.0", "12.00", "3.0", "-6.0", "0.0", "12.5", "7"]:
        assert dfa.matches(text.encode()) == validator(schema).is_valid(json.loads(text)), (
            draft,
            schema,
            text,
        )


# --- exponent forms ----------------------------------------------------------------------------------

_MANTISSAS = ["1", "1.5", "2.25", "9.99", "5", "1.05", "3.3333", "1.0", "10", "0.5", "2.50"]
_EXPONENTS = ["e-1", "e-2", "E-3", "e-06", "e-7", "e-10", "e-0", "e1", "e+2", "e0", "e-00"]
_EXP_TEXTS = [sign + m + e for sign in ("", "-") for m in _MANTISSAS for e in _EXPONENTS]
_SMALL = re.compile(SMALL_EXPONENT_RE)
_BOUNDS = [
    None,
    0,
    Decimal("0.001"),
    Decimal("0.0015"),
    Decimal("-0.05"),
    Decimal("0.5"),
    1,
    -1,
    100,
    Decimal("1e-6"),
]


@pytest.mark.parametrize("lo", _BOUNDS)
@pytest.mark.parametrize("hi", _BOUNDS)
@pytest.mark.parametrize(("xlo", "xhi"), [(False, False), (True, True), (True, False)])
def test_small_exponent_forms_are_exactly_those_in_range(
    lo: Decimal | int | None, hi: Decimal | int | None, xlo: bool, xhi: bool
) -> None:
    """Every ``M e-K`` text the engine reads (normalised mantissa, negative exponent) is in the range's
    language exactly when Decimal puts its value in the range; other exponent forms are in none."""
    dfa = small_exponent_dfa(lo, hi, exclusive_minimum=xlo, exclusive_maximum=xhi)
    dlo = None if lo is None else Decimal(lo)
    dhi = None if hi is None else Decimal(hi)
    for text in _EXP_TEXTS:
        readable = bool(_SMALL.fullmatch(text.lstrip("-")))
        expected = readable and in_range(text, dlo, dhi, xlo, xhi)
        got = dfa is not None and dfa.matches(text.encode())
        assert got == expected, (lo, hi, xlo, xhi, text)


def test_small_exponent_forms_are_never_integers() -> None:
    for text in _EXP_TEXTS:
        if _SMALL.fullmatch(text.lstrip("-")):
            value = Decimal(text)
            assert 0 < abs(value) < 1 and value != value.to_integral_value(), text


_SCHEMA_CASES = [
    ({"type": "number", "minimum": 0}, ["1e-06", "2.5E-7", "1.5"], ["-1e-06", "-2.5e-3"]),
    ({"type": "number", "exclusiveMinimum": 0.001}, ["1.5e-3", "9e-1"], ["1e-3", "9.99e-4", "-1e-1"]),
    ({"type": "number", "minimum": 0, "maximum": 0.5}, ["1e-06", "5e-1"], ["5.5e-1", "-1e-2"]),
    ({"not": {"type": "integer"}}, ["1e-3", "1.5"], ["3", "7.0"]),
    ({"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 2}]}, ["2.5", "1"], ["3", "-5e-1"]),
]


@pytest.mark.parametrize(("schema", "accepted", "rejected"), _SCHEMA_CASES)
def test_exponent_forms_in_schemas(
    schema: dict[str, object], accepted: list[str], rejected: list[str]
) -> None:
    """Small exponent forms under ranges, ``not`` and ``oneOf``; jsonschema agrees on every text."""
    from constrain.json_schema import SchemaOptions, schema_to_dfa

    dfa = schema_to_dfa(schema, SchemaOptions(draft="2020-12", max_any_depth=2))
    validator = jsonschema.Draft202012Validator(schema)
    for text in accepted:
        assert validator.is_valid(json.loads(text)), text
        assert dfa.matches(text.encode()), (schema, text)
    for text in rejected:
        assert not validator.is_valid(json.loads(text)), text
        assert not dfa.matches(text.encode()), (schema, text)


@pytest.mark.parametrize("schema", [{"not": {"type": "integer"}}, {"type": "number", "not": {"minimum": 0}}])
def test_exponent_forms_the_engine_does_not_read_stay_out_of_complements(schema: dict[str, object]) -> None:
    """``1e3`` is an integer and ``1e-3`` is >= 0: read as plain numbers they would pass these ``not``s
    (both did before, as false positives); every text accepted here jsonschema accepts."""
    from constrain.json_schema import SchemaOptions, schema_to_dfa

    dfa = schema_to_dfa(schema, SchemaOptions(draft="2020-12", max_any_depth=2))
    validator = jsonschema.Draft202012Validator(schema)
    for text in ["1e3", "1E+2", "1.5e1", "10e-1", "0e5", "1e-3", "-1e-3", "2.5e-1", "-3"]:
        assert not dfa.matches(text.encode()) or validator.is_valid(json.loads(text)), text


@pytest.mark.parametrize(
    "m", [Decimal("0.001"), Decimal("0.25"), Decimal("0.0025"), Decimal("0.3"), 2, Decimal("1e-5")]
)
def test_small_exponent_multiples_are_exactly_the_multiples(m: Decimal | int) -> None:
    """``multipleOf`` reads the small exponent forms too (else ``not: {multipleOf: 0.001}`` would pass
    ``5e-3``): exactly the multiples, Decimal decides."""
    dfa = small_exponent_multiples_dfa(m)
    for text in _EXP_TEXTS:
        expected = bool(_SMALL.fullmatch(text.lstrip("-"))) and Decimal(text) % Decimal(m) == 0
        assert (dfa is not None and dfa.matches(text.encode())) == expected, (m, text)


_ENUM_TEXTS = [
    "1",
    "1.0",
    "1.00",
    "0.5",
    "0.50",
    "5e-1",
    "5E-01",
    "0.001",
    "0.0010",
    "1e-3",
    "2",
    "-0.5",
    "-5e-1",
]


@pytest.mark.parametrize(
    "schema",
    [
        {"const": 0.001},
        {"enum": [1, 0.5, -0.5]},
        {"not": {"const": 0.5}},
        {"not": {"enum": [1, 0.001]}},
        {"type": "number", "not": {"multipleOf": 0.001}},
    ],
)
def test_numbers_in_enum_const_and_their_complements_follow_jsonschema(schema: dict[str, object]) -> None:
    """An enum's number in every form the engine reads for it (trailing zeros, the small exponent
    form): ``not: {const: 0.5}`` passed ``0.50`` before, a false positive."""
    from constrain.json_schema import SchemaOptions, schema_to_dfa

    dfa = schema_to_dfa(schema, SchemaOptions(draft="2020-12", max_any_depth=2))
    validator = jsonschema.Draft202012Validator(schema)
    for text in _ENUM_TEXTS:
        assert dfa.matches(text.encode()) == validator.is_valid(json.loads(text)), (schema, text)


def test_huge_enum_numbers_and_bounds_stay_exact() -> None:
    """Past the Decimal context's 28 digits: ``1e308`` in an enum crashed (InvalidOperation, MaskBench's
    draft2019_09 multipleOf id9), and negating a 41-digit bound must not round it."""
    from constrain.json_schema import SchemaOptions, schema_to_dfa
    from constrain.json_schema.values import number_value_regex

    assert re.fullmatch(number_value_regex(1e308), "1" + "0" * 308)
    big = 10**40 + 1
    assert re.fullmatch(number_value_regex(-big), f"-{big}.00")
    dfa = schema_to_dfa({"type": "number", "minimum": -big}, SchemaOptions(max_any_depth=2))
    assert dfa.matches(f"-{big}".encode()) and not dfa.matches(f"-{big + 1}".encode())
    assert dfa.matches(f"-{big - 1}".encode())
