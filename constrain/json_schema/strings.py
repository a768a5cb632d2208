"""String keywords as languages over the quoted JSON string: ``minLength``, ``maxLength``, ``pattern``
and ``format``; also the keys of ``patternProperties``.

A string's language is ``"`` + the intersection of its keywords' content languages + ``"``, where the
content is the JSON-escaped text (one code point may be an escape such as ``\\n`` or ``\\u00e9``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import automata as A
from ..automata import DFA, empty_dfa
from ..automata.counted import MAX_MARKED_BOUND, count_mark
from ..automata.dfa import dfa_byte_classes, dfa_from_class_arrays, joint_byte_classes, numbered_by_first
from ..exceptions import RegexSyntaxError, SchemaError, UnsupportedRegexFeature, UnsupportedSchemaFeature
from ..limits import DEFAULT_LIMITS, current_limits
from .references import SchemaNode

if TYPE_CHECKING:
    from .compiler import CompileContext

#: Any JSON string content; one code point of it.
ANY_CHARS = A.Regex(r"(?s).*", 0, True)
ONE_CHAR = A.Regex(r"(?s).", 0, True)
#: Length bounds past this have no layers (one per code point): a ``maxLength`` is counted beside the
#: automaton (below), a ``minLength`` refused (or dropped under ``lenient``).
MAX_COUNTED_LENGTH = DEFAULT_LIMITS.max_counted_length
#: A ``maxLength`` past this is counted beside the automaton where the token engine can count it
#: exactly (:mod:`constrain.automata.counted`), not built as one layer of states per code point: 8,192
#: was 115,000 states (Snowplow sp_257's 1.9 s first mask), 256 about 3,600 (not lower: a schema whose
#: strings of 256 were put out of line as too large compiles slower as one DFA, sp_202: 0.4 -> 1.4 s).
COUNT_PAST = 256
#: Every refusal of a counted ``maxLength`` says this (the token engine's path then builds layers).
COUNTED = "counted beside the automaton"
#: Formats no finite automaton can check.
UNENFORCEABLE_FORMATS = {"regex"}


@functools.lru_cache(maxsize=1)
def any_string_dfa() -> DFA:
    """Any JSON string, quotes included (built once per process: 0.2 ms, and most schemas ask for it
    several times, as a plain ``"type": "string"`` or as the keys of ``additionalProperties``)."""
    return A.build(string_expr(ANY_CHARS))


def string_expr(content: A.Expr) -> A.Expr:
    """``"content"``: a JSON string whose (escaped) text is in ``content``."""
    return A.seq(A.Literal(b'"'), content, A.Literal(b'"'))


_QUOTE = 0x22


def quoted(body: DFA, label: str = "<string>") -> DFA:
    """The DFA of ``"body"`` (a string's content language between quotes), the same table as
    ``A.build(string_expr(A.Embed(body)))``, built directly: a start state reading the opening quote,
    the closing quote from each accepting state. Neither the subset construction nor refinement runs
    (117 ms -> a few ms for ``maxLength: 2048``'s 28,000 states): where no accepting state reads a
    quote (an unescaped quote ends JSON string content) the table is deterministic, and it is
    minimal as it stands (``body`` is: appending ``"`` keeps its states apart) unless a state of
    ``body`` does what the new start does, read only a quote into ``body``'s start (content such as
    ``(\\")*``); that case and the others take the general construction."""
    table, body_classes = A.class_table(body)
    on_quote = table[:, body_classes[_QUOTE]]
    if not body.accepting.any() or bool((on_quote[body.accepting] >= 0).any()):
        return A.build(string_expr(A.Embed(body)), label)
    into_start = np.flatnonzero(on_quote == body.start)
    if into_start.shape[0]:
        width = np.bincount(body_classes, minlength=table.shape[1])  # bytes per class
        if bool((((table[into_start] >= 0) * width).sum(axis=1) == 1).any()):
            return A.build(string_expr(A.Embed(body)), label)
    quote = np.zeros(256, dtype=np.int64)
    quote[_QUOTE] = 1
    joint = joint_byte_classes(dfa_byte_classes(body), quote)
    # Classes numbered by first byte, as the subset construction numbers them: the same BFS order.
    classes = numbered_by_first(joint)
    _u, reps = np.unique(classes, return_index=True)
    n = body.num_states
    compact = np.full((n + 2, reps.shape[0]), -1, dtype=np.int64)
    compact[:n] = A.dfa_columns(body, reps)
    q = int(classes[_QUOTE])
    compact[np.flatnonzero(body.accepting), q] = n + 1
    compact[n, q] = body.start
    accepting = np.zeros(n + 2, dtype=bool)
    accepting[n + 1] = True
    return dfa_from_class_arrays(compact, accepting, n, classes, label, known_minimal=True)


def string_language(ctx: CompileContext, node: SchemaNode, k: dict[str, Any]) -> DFA:
    """The strings ``node``'s string keywords allow."""
    content: list[tuple[str, DFA]] = []  # (the keyword, its content language)
    lo = k.get("minLength", 0)
    hi = k.get("maxLength")
    for name, v in (("minLength", lo), ("maxLength", hi)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v)):
            raise SchemaError(f"{name} must be a non-negative integer", f"{node.ptr}/{name}")
    counted: int | None = None  # a maxLength counted beside the DFA (a count mark), see below
    if lo or hi is not None:
        top = int(hi) if hi is not None else int(lo)
        most = current_limits().max_counted_length
        if hi is not None and _countable(ctx, int(lo), int(hi), most):
            # Too many layers: the content keeps only the minLength layers, and a count mark before it
            # tells the token engine to count the rest (constrain.automata.counted).
            counted = int(hi)
            ctx.counted.append((f"{node.ptr}/maxLength", counted))
            if lo:
                content.append(("minLength", length_dfa(int(lo), None)))
        elif top > most:
            name = "maxLength" if hi is not None else "minLength"
            ctx.unsupported(name, f"{node.ptr}/{name}", f"a length bound of {top} is too large to count")
        else:
            content.append(
                (
                    "maxLength" if hi is not None else "minLength",
                    length_dfa(int(lo), None if hi is None else int(hi)),
                )
            )
    if "pattern" in k:
        p = k["pattern"]
        if not isinstance(p, str):
            raise SchemaError("pattern must be a string", f"{node.ptr}/pattern")
        dfa = pattern_dfa(ctx, p, f"{node.ptr}/pattern")
        if dfa is not None:
            content.append(("pattern", dfa))
    if "format" in k and ctx.options.formats == "assert" and isinstance(k["format"], str):
        from .formats import format_max_length, format_regex

        regex = format_regex(k["format"])
        if regex is not None:
            content.append(("format", A.build(A.Regex(regex, 0, True))))
            longest = format_max_length(k["format"])
            if longest is not None:
                content.append(("format", length_dfa(0, longest)))
        elif k["format"] in UNENFORCEABLE_FORMATS:
            ctx.unsupported("format", f"{node.ptr}/format", f"format {k['format']!r} is not regular")
    if not content:
        if counted is not None:
            return quoted(A.build(A.seq(A.Literal(count_mark(counted)), ANY_CHARS)), "<counted string>")
        return any_string_dfa()
    while True:
        try:
            body = ctx.intersect(*(d for _, d in content))
            break
        except UnsupportedRegexFeature as e:
            # The intersection went past an automaton size limit: blame (under lenient, drop) the
            # length bound first, then the format, then the pattern (a product of a long format such
            # as uri with maxLength: 2048 is larger than either).
            names = [name for name, _ in content]
            name = next(n for n in ("maxLength", "minLength", "format", "pattern") if n in names)
            ctx.unsupported(name, f"{node.ptr}/{name}", str(e))  # raises unless lenient
            content = [(n, d) for n, d in content if n != name]
    if counted is not None:
        body = A.build(A.seq(A.Literal(count_mark(counted)), A.Embed(body)), "<counted string>")
    return quoted(body)


def _countable(ctx: CompileContext, lo: int, hi: int, most: int) -> bool:
    """Whether ``maxLength: hi`` is a count mark: past ``ctx.count_past`` (see
    :attr:`CompileContext.count_past`), with a ``minLength`` of at most ``most`` layers."""
    past = ctx.count_past
    return past is not None and hi > past and lo <= min(most, hi) and hi <= MAX_MARKED_BOUND


def pattern_dfa(ctx: CompileContext, pattern: str, ptr: str) -> DFA | None:
    """String contents that ``pattern`` (ECMA-262) finds a match in; None where it is dropped (lenient)."""
    from .ecma_regex import search_regex

    try:
        return A.build(A.Regex(search_regex(pattern), 0, True))
    except UnsupportedRegexFeature as e:
        ctx.unsupported(ptr.rsplit("/", 1)[-1], ptr, str(e))
        return None
    except RegexSyntaxError as e:
        raise SchemaError(f"invalid regex {pattern!r}: {e}", ptr) from None


def key_dfa(ctx: CompileContext, pattern: str, ptr: str) -> DFA | None:
    """Quoted keys whose decoded text matches ``pattern`` (search semantics)."""
    body = pattern_dfa(ctx, pattern, ptr)
    return None if body is None else quoted(body)


def length_dfa(lo: int, hi: int | None) -> DFA:
    """JSON string contents of ``lo`` to ``hi`` code points, as layered copies of the one-char DFA."""
    if hi is not None and hi < lo:
        return empty_dfa("minLength > maxLength")
    top = hi if hi is not None else lo
    if top > 20_000:
        raise UnsupportedSchemaFeature("maxLength", "", f"a length bound of {top} is too large to count")
    char = A.build(ONE_CHAR)
    # The one-char automaton has a single accepting state with no way out: it is the next layer's start.
    (final,) = np.flatnonzero(char.accepting).tolist()
    order = [char.start, *(s for s in range(char.num_states) if s != final and s != char.start)]
    width = len(order)
    layers = top + 1
    # One layer over the one-char automaton's byte classes (a local state, -2 for the next layer's
    # start, -1 dead), then every layer at once: numpy, not a Python loop per layer and byte (8192
    # layers took seconds).
    classes = np.asarray(dfa_byte_classes(char), dtype=np.int32)
    reps = np.array([int(np.argmax(classes == c)) for c in range(int(classes.max()) + 1)])
    local = np.full(char.num_states, -1, dtype=np.int64)
    local[order] = np.arange(width)
    targets = char.transitions[order][:, reps].astype(np.int64)
    layer = np.where(targets < 0, -1, np.where(targets == final, -2, local[np.maximum(targets, 0)]))
    base = (np.arange(layers, dtype=np.int64) * width)[:, None, None]
    following = base + width
    following[-1] = base[-1] if hi is None else -1  # no bound: the last layer saturates
    table = np.where(layer >= 0, layer + base, np.where(layer == -2, following, -1))
    accepting = np.zeros(layers * width, dtype=bool)
    accepting[np.arange(lo, layers) * width] = True
    compact = table.reshape(layers * width, -1).astype(np.int32)
    # With an upper bound no two live states are equivalent: a layer's start tells its layer by the
    # lengths it accepts, and within a layer the one-char automaton's states differ (it is minimal).
    # (Without one, the last two layers' inner states both lead to the last start: refine.)
    label = f"length {lo}..{hi}"
    return dfa_from_class_arrays(compact, accepting, 0, classes, label, known_minimal=hi is not None)
