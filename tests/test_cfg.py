"""Lark grammars: tiny vocabularies with exact allowed sets, errors, and real tokenizers against oracles.

The oracles are independent of the engine. For strings: Lark's own Earley parser with its dynamic
lexer's terminal matcher replaced by the rule documented in :mod:`constrain.cfg.earley` (a terminal
ends where the next character cannot continue its regex), decided with the third-party ``regex``
module's partial matching rather than our DFAs (:func:`lark_accepts`); every generated string is also
checked against plain ``lark.Lark(..., lexer="dynamic")`` (a superset, see the earley docstring).
For masks: a brute force (fork the matcher, try every token).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import lark
import numpy as np
import pytest
import regex
import torch

import constrain
import constrain.grammars
from constrain import CompiledGrammar, Grammar, GrammarMatcher, MatcherUsageError, TokenizerInfo
from constrain.cfg import EarleyTokenMasks, automaton_for, build_automaton, parse_lark, token_masks
from constrain.cfg.lark_frontend import _EXACT_REWRITES
from constrain.exceptions import GrammarError, UnsupportedFeatureError

from .shared_data import hf_tokenizer, tokenizer_info

# ---- helpers ---------------------------------------------------------------------------------------------


class _Match:
    """The two things Lark's dynamic Earley scanner reads from a match."""

    def __init__(self, text: str, start: int, end: int) -> None:
        self._text, self._end = text[start:end], end

    def group(self, _: int = 0) -> str:
        return self._text

    def end(self) -> int:
        return self._end


class _LookaheadMatcher:
    """Lark's terminal matcher with the one-byte-lookahead rule: from ``index``, extend while the text
    is still a prefix of some match of the terminal (``regex`` partial matching), then the match is
    that longest live prefix if it is a full match, else there is none."""

    def __init__(self, terminals: list[Any]) -> None:
        self._res: dict[str, Any] = {}
        for t in terminals:
            pattern = t.pattern.to_regexp()
            # ESCAPED_STRING / C_COMMENT: the lazy-quantifier regexes as the languages Lark's lexer gives
            # them (the front end's table; as written, their language never ends at a quote).
            self._res[t.name] = regex.compile(_EXACT_REWRITES.get(pattern, pattern))

    def match(self, term: Any, text: str, index: int = 0) -> _Match | None:
        r = self._res[term.name]
        k = index
        while k < len(text) and r.fullmatch(text[index : k + 1], partial=True) is not None:
            k += 1
        if k > index and r.fullmatch(text[index:k]) is not None:
            return _Match(text, index, k)
        return None


_PARSERS: dict[tuple[str, str, str], lark.Lark] = {}


def lark_parser(source: str, start: str = "start", lexer: str = "lookahead") -> lark.Lark:
    """Lark's Earley parser: ``lexer="lookahead"`` (the engine's rule, plugged into Lark's dynamic
    lexer) or one of Lark's own (``"dynamic"``, ``"dynamic_complete"``)."""
    key = (source, start, lexer)
    if key not in _PARSERS:
        parser = lark.Lark(
            source, parser="earley", lexer="dynamic" if lexer == "lookahead" else lexer, start=start
        )
        if lexer == "lookahead":
            earley = parser.parser.parser
            earley.term_matcher = _LookaheadMatcher(list(parser.terminals)).match
        _PARSERS[key] = parser
    return _PARSERS[key]


def lark_accepts(text: str, source: str, start: str = "start", lexer: str = "lookahead") -> bool:
    """Lark's verdict (see :func:`lark_parser`): the oracle for every produced string."""
    try:
        lark_parser(source, start, lexer).parse(text)
    except lark.exceptions.LarkError:
        return False
    return True


def cfg_matcher(compiled: Any) -> GrammarMatcher:
    """``GrammarMatcher`` on a compiled Lark grammar (over the Earley engine)."""
    m = GrammarMatcher(compiled)
    assert isinstance(m.compiled.automaton, EarleyTokenMasks)
    return m


def allowed(m: GrammarMatcher) -> set[int]:
    return set(m.allowed_token_ids().tolist())


def brute_force(m: GrammarMatcher, vocab_size: int) -> set[int]:
    """Every token the matcher accepts: try each one on a fork, rolling back after each success."""
    twin = m.fork()
    out = set()
    for tid in range(vocab_size):
        if twin.accept_token(tid):
            out.add(tid)
            twin.rollback(1)
    return out


def shortest_completion(m: GrammarMatcher) -> bytes:
    """The shortest printable-ASCII byte string that takes the matcher to an end (BFS over configurations)."""
    auto = m.compiled.automaton.earley
    start = m.state
    prev: dict[int, tuple[int, int]] = {start: (-1, -1)}
    queue = deque([start])
    while queue:
        c = queue.popleft()
        if auto.is_final(c):
            out = bytearray()
            while prev[c][0] >= 0:
                c, b = prev[c]
                out.append(b)
            return bytes(reversed(out))
        for b in range(0x20, 0x7F):
            nxt = auto.resolve(c, b)
            if nxt >= 0 and nxt not in prev:
                prev[nxt] = (c, b)
                queue.append(nxt)
    raise AssertionError("no completion found")  # pragma: no cover


# ---- a tiny vocabulary with exact allowed sets ------------------------------------------------------------

PARENS = r"""
start: "(" start ")" | NUM
NUM: /[0-9]+/
"""
TINY = [b"", b"", b"(", b")", b"1", b"12", b"((", b"))", b"1)", b"(1", b"2)", b")(", b"a"]
EOS = 0


def tiny_matcher(source: str = PARENS) -> GrammarMatcher:
    info = TokenizerInfo.from_vocab(TINY, eos_ids=[EOS], special_ids=[1])
    m = GrammarMatcher(constrain.compile(Grammar.from_lark(source), info))
    assert isinstance(m.compiled.automaton, EarleyTokenMasks)
    return m


def test_tiny_vocab_exact_allowed_sets() -> None:
    m = tiny_matcher()
    assert allowed(m) == {2, 4, 5, 6, 9}  # ( 1 12 (( (1
    assert m.accept_token(2)  # (
    assert allowed(m) == {2, 4, 5, 6, 8, 9, 10}  # one level open: "1)" and "2)" may close it
    assert m.accept_token(2)  # ((
    assert m.accept_token(4)  # ((1
    assert allowed(m) == {3, 4, 5, 7, 8, 10}  # "))" closes both levels; digits may go on
    assert not m.can_end()
    assert not m.accept_token(11)  # ")(" : rejected, state unchanged
    assert m.accept_token(7)  # ((1))
    assert m.can_end()
    assert allowed(m) == {EOS}
    assert m.accept_token(EOS) and m.is_terminated()
    assert allowed(m) == {EOS}
    assert not m.accept_token(4)


def test_byte_classes_group_exactly_the_bytes_every_terminal_treats_alike() -> None:
    """A step fills a whole byte class at once; that is exact only if the classes are right."""
    from constrain.cfg import fast_step as fs

    auto = build_automaton(parse_lark(constrain.grammars.load("json")))
    gtrans = auto.tables[fs.GTRANS]
    byte_class = auto.tables[fs.BYTE_CLASS]
    offsets, members = auto.tables[fs.CLASS_OFF], auto.tables[fs.CLASS_BYTES]
    for cls in range(offsets.shape[0] - 1):
        assert {int(b) for b in members[offsets[cls] : offsets[cls + 1]]} == set(
            np.flatnonzero(byte_class == cls).tolist()
        )
    for a in range(256):
        for b in range(a + 1, 256):
            assert (byte_class[a] == byte_class[b]) == np.array_equal(gtrans[:, a], gtrans[:, b]), (a, b)
    assert 1 < offsets.shape[0] - 1 < 256  # json's terminals do tell some bytes apart, not all


def test_future_classes_identify_lexeme_states_with_the_same_continuations() -> None:
    """Lexeme states share a trie walk exactly when they accept the same continuations."""
    auto = build_automaton(
        parse_lark('start: A B C D\nA: "ab" | "ac"\nB: "a" ("b" | "c")\nC: "ab" | "ad"\nD: /x[0-9]+/')
    )
    names = [t.name for t in auto.cfg.terminals]
    a, b, c, d = (names.index(n) for n in "ABCD")
    start = [auto.dfas[t].start for t in range(len(names))]
    assert auto.future_class_of(a, start[a]) == auto.future_class_of(b, start[b])
    assert auto.future_class_of(a, start[a]) != auto.future_class_of(c, start[c])
    after_x = int(auto.dfas[d].transitions[start[d], ord("x")])
    after_xdigit = int(auto.dfas[d].transitions[after_x, ord("5")])
    assert after_xdigit != after_x
    # "x" then digits: after one digit the DFA accepts; after "x" alone it does not
    assert auto.future_class_of(d, after_x) != auto.future_class_of(d, after_xdigit)
    # every state of A after "a" accepts exactly "b" or "c", like B's
    assert auto.future_class_of(a, int(auto.dfas[a].transitions[start[a], ord("a")])) == auto.future_class_of(
        b, int(auto.dfas[b].transitions[start[b], ord("a")])
    )


def test_tables_grow_from_tiny_sizes() -> None:
    """Scratch, closure and node tables that start far too small (or full) grow on NEED_ROOM; the masks
    along a JSON walk equal those of an automaton with the default sizes."""
    from constrain.cfg import fast_step as fs
    from constrain.cfg.token_masks import compile_cfg
    from constrain.masks.handle import set_tables

    info = tokenizer_info("mistral-32k")
    grammar = Grammar.from_lark(name="json")
    source = constrain.grammars.load("json")
    normal = compile_cfg(grammar, info, build_automaton(parse_lark(source)))
    small_auto = build_automaton(parse_lark(source))
    tabs = small_auto._tabs
    tabs[fs.SCRATCH] = np.zeros(0, dtype=np.int64)
    tabs[fs.WORK] = np.zeros(0, dtype=np.int64)
    tabs[fs.SEEN] = np.full(1, -1, dtype=np.int64)
    n = small_auto.num_nodes  # the root: cut the node and fresh-lexeme pools to what it uses
    for off_i, pool_i in ((fs.NODE_OFF, fs.NODE_POOL), (fs.FRESH_OFF, fs.FRESH_POOL)):
        used = int(tabs[off_i][n])
        tabs[off_i] = tabs[off_i][: n + 1].copy()
        tabs[pool_i] = tabs[pool_i][:used].copy()
    nc = small_auto.num_configs  # and ``trans`` to the configurations made so far
    tabs[fs.TRANS] = tabs[fs.TRANS][: nc + 2].copy()
    tabs[fs.CFG_OFF] = tabs[fs.CFG_OFF][: 2 * nc + 4].copy()  # (start, end) pairs
    small_auto.trans = tabs[fs.TRANS]
    small_auto.tables = tuple(tabs)
    set_tables(small_auto.handle, small_auto.tables)
    small = compile_cfg(grammar, info, small_auto)
    text = '{"a": [1, 2.5e3, {"b": null, "c": "x\\ny"}], "d": true}'
    a, b = cfg_matcher(normal), cfg_matcher(small)
    for tid in hf_tokenizer("mistral-32k").encode(text, add_special_tokens=False).ids:
        assert allowed(a) == allowed(b)
        assert a.accept_token(tid) and b.accept_token(tid)
    assert a.can_end() and b.can_end()
    grown = small_auto.tables
    assert grown[fs.SCRATCH].shape[0] > 0 and grown[fs.WORK].shape[0] > 0 and grown[fs.SEEN].shape[0] > 1
    assert grown[fs.NODE_OFF].shape[0] > n + 1 and small_auto.num_nodes > n
    assert grown[fs.TRANS].shape[0] > nc + 2 and small_auto.num_configs > nc + 2


def test_mask_walk_builds_the_nodes_it_needs() -> None:
    """The crossing-token walk builds the Earley nodes its steps need (the closure runs inside the
    walk): the mask still equals the brute force."""
    m = tiny_matcher('start: "(" start ")" | NUM\nNUM: /[0-9]+/\n%ignore " "')
    assert m.accept_token(2) and m.accept_token(4)  # (1
    auto = m.compiled.automaton.earley
    nodes = auto.num_nodes
    assert allowed(m) == brute_force(m, len(TINY)) == {3, 4, 5, 8, 10}
    assert auto.num_nodes > nodes  # the walk needed nodes it did not have


def test_tiny_vocab_context_decides_crossing_tokens() -> None:
    m = tiny_matcher()
    assert m.accept_token(9)  # (1
    assert 7 not in allowed(m)  # "))" would close a level that is not open
    assert {3, 8, 10} <= allowed(m)
    assert m.accept_token(3) and m.can_end()


def test_rollback_fork_reset() -> None:
    m = tiny_matcher()
    assert m.accept_token(6) and m.accept_token(5)  # ((12
    twin = m.fork()
    assert m.accept_token(7) and m.accept_token(EOS)
    assert m.is_terminated() and not twin.is_terminated()
    m.rollback(2)
    assert m.num_steps == 2 and allowed(m) == allowed(twin)
    with pytest.raises(MatcherUsageError):
        m.rollback(3)
    m.reset()
    assert m.num_steps == 0 and allowed(m) == {2, 4, 5, 6, 9}


def test_accept_bytes_and_forced_bytes() -> None:
    m = tiny_matcher('start: "hello" ("," WORD)*\nWORD: /[a-z]+/')
    assert m.forced_bytes() == b"hello"
    assert m.accept_bytes("hel")
    assert m.forced_bytes() == b"lo"
    assert not m.accept_bytes("x")
    assert m.accept_bytes(b"lo,ab") and m.can_end()
    assert m.forced_bytes() == b""


def test_fill_bitmask_tensor_and_numpy() -> None:
    m = tiny_matcher()
    words = m.compiled.num_words
    bm = torch.full((2, words), -1, dtype=torch.int32)
    assert m.fill_next_token_bitmask(bm, 1)
    assert bm[1].numpy().tolist() == m.next_token_mask().tolist()
    assert m.fill_next_token_bitmask(bm, 0)  # the hot path, same tensor
    assert bm[0].numpy().tolist() == m.next_token_mask().tolist()
    arr = np.zeros((1, words), dtype=np.int32)
    m.fill_next_token_bitmask(arr, 0)
    assert arr[0].tolist() == m.next_token_mask().tolist()
    with pytest.raises(MatcherUsageError):
        m.fill_next_token_bitmask(torch.zeros((1, words), dtype=torch.int64))


def test_compile_and_matcher_dispatch() -> None:
    info = TokenizerInfo.from_vocab(TINY, eos_ids=[EOS], special_ids=[1])
    grammar = Grammar.from_lark(PARENS)
    assert grammar.kind == "lark" and dict(grammar.options)["start"] == "start"
    compiled = constrain.compile(grammar, info)
    assert isinstance(compiled, CompiledGrammar) and isinstance(compiled.automaton, EarleyTokenMasks)
    assert constrain.compile(grammar, info) is compiled
    assert compiled.kind == "context-free"
    regex = GrammarMatcher(constrain.compile(Grammar.from_regex("a+"), info))
    assert type(regex) is GrammarMatcher and type(regex.fork()) is GrammarMatcher


def test_start_rule_and_named_grammar() -> None:
    g = Grammar.from_lark('start: a\na: "x" b\nb: "y"', start="a")
    assert automaton_for(g.source, "a").accepts(b"xy")
    assert Grammar.from_lark(name="json").source == constrain.grammars.load("json")
    with pytest.raises(constrain.InvalidInputError):
        Grammar.from_lark(name="no-such-grammar")


# ---- Lark features and semantics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "good", "bad"),
    [
        # ambiguous, not LALR(1): the same input derives two ways
        ('start: a | b\na: "x" "y"+\nb: "x"+ "y"', ["xy", "xyy", "xxy"], ["x", "yx", ""]),
        ('start: start start | "a"', ["a", "aaaa"], ["", "b"]),
        # templates, ?rule, [] and ?
        (
            'start: _sep{item, ","}\n_sep{x, s}: x (s x)*\n?item: "a" ["b"] "c"?',
            ["a", "ab,ac", "abc,a,ac"],
            ["", "a,", "ba"],
        ),
        # regex flags and case-insensitive strings
        (
            'start: "select"i NAME\nNAME: /[a-z]+/i\n%ignore " "',
            ["SELECT Foo", "select x", "selectx "],
            ["select", "selec x"],
        ),
        # %ignore at the start, between, at the end; common imports
        (
            'start: INT ("," INT)*\n%import common.INT\n%import common.WS\n%ignore WS',
            ["1", " 1 , 2 ", "\n1,2\n"],
            ["1,", ",1", ""],
        ),
        # a keyword is also a NAME under the dynamic lexer (Lark's Earley accepts it too)
        ('start: "if" NAME | NAME "=" NAME\nNAME: /[a-z]+/\n%ignore " "', ["if x", "if = x"], ["if", "="]),
        # ESCAPED_STRING ends at the first unescaped quote, as in Lark's lexer
        (
            "start: ESCAPED_STRING\n%import common.ESCAPED_STRING",
            ['""', '"a\\"b"', '"\\\\"'],
            ['"a"b"', '"\\"', '"a\nb"'],
        ),
        ('start: C_COMMENT "x"\n%import common.C_COMMENT', ["/* a */x", "/***/x"], ["/* */ */x"]),
        # longest match, one byte of lookahead: A cannot stop before a "b" that continues it
        ('start: A "b"\nA: /ab?/', ["abb"], ["ab", "b"]),
        ("start: A+\nA: /ab?/", ["a", "aab", "aba"], [""]),
    ],
)
def test_language_matches_lark(source: str, good: list[str], bad: list[str]) -> None:
    auto = automaton_for(Grammar.from_lark(source).source)
    for s in good:
        assert lark_accepts(s, source), f"bad test: Lark rejects {s!r}"
        assert auto.accepts(s.encode()), s
    for s in bad:
        assert not lark_accepts(s, source), f"bad test: Lark accepts {s!r}"
        assert not auto.accepts(s.encode()), s


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ('start: "a" foo', 1, 12),
        ('start: "a"\nstart2: (', 2, 10),
        ('start: "a" "b\n', 1, 12),
        ("start: x\nx{a}: a", None, None),
    ],
)
def test_grammar_error_location(source: str, line: int | None, column: int | None) -> None:
    with pytest.raises(GrammarError) as info:
        Grammar.from_lark(source)
    err = info.value
    assert isinstance(err, constrain.ConstrainError) and isinstance(err, ValueError)
    if line is not None:
        assert (err.line, err.column) == (line, column), str(err)
        assert f"line {line}" in str(err)


def test_unsupported_and_empty_grammars() -> None:
    with pytest.raises(UnsupportedFeatureError):
        Grammar.from_lark("start: A\nA: /a(?=b)/")
    with pytest.raises(GrammarError):
        Grammar.from_lark('start: start "a"')  # generates nothing
    with pytest.raises(constrain.InvalidInputError):
        Grammar.from_lark(None)


# ---- real tokenizers ------------------------------------------------------------------------------------

WALK_GRAMMARS = ["json", "arithmetic", "sqlite_select", "python_expr"]


def random_walk(
    m: GrammarMatcher, rng: random.Random, max_tokens: int, brute_steps: tuple[int, ...] = ()
) -> bytes:
    """Random allowed tokens (never EOS early), then the shortest completion spelled by single bytes.

    At ``brute_steps`` the mask is also checked against the brute force.
    """
    info = m.compiled.tokenizer_info
    eos = set(info.eos_ids)
    out = bytearray()
    for step in range(max_tokens):
        if step in brute_steps:
            assert allowed(m) == brute_force(m, info.vocab_size), f"step {step} after {bytes(out)!r}"
        if m.can_end() and rng.random() < 0.3:
            break
        ids = [t for t in m.allowed_token_ids().tolist() if t not in eos]
        tid = rng.choice(ids)
        assert m.accept_token(tid)
        out += info.token_bytes[tid]
    single = {b[0]: tid for tid, b in enumerate(info.token_bytes) if len(b) == 1}
    for b in shortest_completion(m):
        assert single[b] in allowed(m)
        assert m.accept_token(single[b])
        out.append(b)
    assert m.can_end() and any(e in allowed(m) for e in eos)
    return bytes(out)


@pytest.mark.parametrize("tok", ["llama3-128k", "mistral-32k", "gemma3-262k"])
@pytest.mark.parametrize("name", WALK_GRAMMARS)
def test_random_walks_are_accepted_by_lark(tok: str, name: str) -> None:
    info = tokenizer_info(tok)
    source = constrain.grammars.load(name)
    compiled = constrain.compile(Grammar.from_lark(name=name), info)
    rng = random.Random(f"{tok}/{name}")
    for _ in range(3):
        m = cfg_matcher(compiled)
        # the 32k vocabulary makes a brute-force check cheap enough at a couple of random-walk steps
        data = random_walk(m, rng, max_tokens=12, brute_steps=(2, 6) if tok == "mistral-32k" else ())
        text = data.decode("utf-8")  # every mask keeps UTF-8 valid at the end
        assert lark_accepts(text, source), text
        assert lark_accepts(text, source, lexer="dynamic"), text


@pytest.mark.parametrize("tok", ["llama3-128k", "mistral-32k"])
def test_masks_match_brute_force_along_a_path(tok: str) -> None:
    info = tokenizer_info(tok)
    text = '{"name": "Ada", "tags": ["x", 1.5e3, {}], "ok": true, "n": -0}'
    ids = hf_tokenizer(tok).encode(text, add_special_tokens=False).ids
    m = cfg_matcher(constrain.compile(Grammar.from_lark(name="json"), info))
    for step, tid in enumerate(ids):
        if step in (0, 2, 5, 9, 14, 17) or step == len(ids) - 1:
            assert allowed(m) == brute_force(m, info.vocab_size), f"step {step}"
        assert tid in allowed(m)
        assert m.accept_token(tid)
    assert m.can_end()
    assert info.decode_bytes(ids).decode().strip() == text  # SentencePiece may add a leading space


def test_masks_match_brute_force_sql_gemma() -> None:
    info = tokenizer_info("gemma3-262k")
    text = "SELECT a.x, count(*) AS n FROM t a JOIN u ON a.id = u.id WHERE x > 1 GROUP BY a.x;"
    ids = hf_tokenizer("gemma3-262k").encode(text, add_special_tokens=False).ids
    m = cfg_matcher(constrain.compile(Grammar.from_lark(name="sqlite_select"), info))
    for step, tid in enumerate(ids):
        if step in (0, 3, 9):
            assert allowed(m) == brute_force(m, info.vocab_size), f"step {step}"
        assert m.accept_token(tid), step
    assert m.can_end()


def test_masks_match_byte_level_reference_on_random_json_walks() -> None:
    """Every mask along random JSON walks equals a per-token check on a separate automaton.

    The reference steps sets of lexemes one byte at a time in plain Python (no ``trans`` table, no
    numba byte step, no trie walk, no batched transitions); it borrows only the Earley closure
    (``end_node``) of a separate automaton. So the masks' machinery (lexer-only sets, crossing
    sub-tries, the compiled byte steps and their interning) is checked against it. The walks prefer
    structural tokens so they nest and close objects and arrays.
    """
    info = tokenizer_info("mistral-32k")
    compiled = constrain.compile(Grammar.from_lark(name="json"), info)
    ref = build_automaton(parse_lark(constrain.grammars.load("json")))
    dfas = ref.dfas
    # A state: (root node or -1, frozenset of lexemes (start node, terminal, DFA state)); None = dead.
    State = tuple[int, frozenset[tuple[int, int, int]]]

    def ends(
        lexemes: frozenset[tuple[int, int, int]], b: int | None
    ) -> tuple[set[tuple[int, int]], set[int]]:
        ends_t: set[tuple[int, int]] = set()
        ends_ign: set[int] = set()
        for m, t, q in lexemes:
            if (b is None or dfas[t].transitions[q, b] < 0) and dfas[t].accepting[q]:
                if ref._is_ignore[t]:
                    ends_ign.add(m)
                else:
                    ends_t.add((m, t))
        return ends_t, ends_ign

    def ref_step(state: State, b: int) -> State | None:
        out = {
            (m, t, int(dfas[t].transitions[q, b])) for m, t, q in state[1] if dfas[t].transitions[q, b] >= 0
        }
        ends_t, ends_ign = ends(state[1], b)
        if ends_t or ends_ign:
            node = ref.end_node(frozenset(ends_t), frozenset(ends_ign))
            out |= {(node, t, int(dfas[t].transitions[q, b])) for t, q in ref._fresh_lexemes(node)}
            out = {lex for lex in out if lex[2] >= 0}
        return (-1, frozenset(out)) if out else None

    def ref_final(state: State) -> bool:
        if state[0] >= 0 and ref.node_final(state[0]):
            return True
        ends_t, ends_ign = ends(state[1], None)
        return bool(ends_t or ends_ign) and ref.node_final(
            ref.end_node(frozenset(ends_t), frozenset(ends_ign))
        )

    cache: dict[tuple[State, int], State | None] = {}

    def ref_walk(c: State | None, data: bytes) -> State | None:
        for b in data:
            if c is None:
                return None
            if (c, b) not in cache:
                cache[c, b] = ref_step(c, b)
            c = cache[c, b]
        return c

    root = ref._config(ref.start).base  # the root node, from which the start lexemes begin
    start: State = (root, frozenset((root, t, q) for t, q in ref._fresh_lexemes(root)))

    eos = set(info.eos_ids)
    candidates = [
        t for t, data in enumerate(info.token_bytes) if data and t not in eos and t not in info.special_ids
    ]
    # JSON punctuation with a few value bytes: walks through these open and close nested values
    json_bytes = set(b'[]{},:"0123456789.-abcdeflnrstu')
    structural = [
        t
        for t in candidates
        if set(info.token_bytes[t]) <= json_bytes and set(info.token_bytes[t]) & set(b'[]{},:"')
    ]
    rng = random.Random("json walks")
    prefixes = ['{"a": [{"b": [', '[[{"k": {"x": [1, ', '{"s": "t", "o": {"p": {', "[[[[[[["]
    for walk, prefix in enumerate(prefixes):
        m = cfg_matcher(compiled)
        c: State | None = start
        forced = hf_tokenizer("mistral-32k").encode(prefix, add_special_tokens=False).ids
        for step in range(len(forced) + 24):
            assert c is not None
            expected = {t for t in candidates if ref_walk(c, info.token_bytes[t]) is not None}
            if ref_final(c):
                expected |= eos
            assert allowed(m) == expected, f"walk {walk} step {step}"
            # mostly punctuation that keeps the document open (else the walks end in whitespace)
            pool = []
            for t in structural:
                nxt = ref_walk(c, info.token_bytes[t]) if t in expected else None
                if nxt is not None and not ref_final(nxt):
                    pool.append(t)
            if rng.random() < 0.2:
                pool = []
            tid = forced[step] if step < len(forced) else rng.choice(pool or sorted(expected - eos))
            assert m.accept_token(tid)
            c = ref_walk(c, info.token_bytes[tid])


FRESH_TWIN_TEXTS = {
    "arithmetic": "3.5 * (x + 2) ^ 2 - sqrt(y, 4) / -7 % 3",
    "python_expr": "sorted([(k, v) for k, v in d.items() if v > 1], key=lambda kv: -kv[1])[:10]",
    "sqlite_select": "SELECT a, COUNT(b) AS n FROM t WHERE x >= 'q' GROUP BY a ORDER BY n DESC LIMIT 3;",
    "json": '{"a": [1, {"b": null}],\n "c": "d"}',
}


@pytest.mark.parametrize("name", sorted(FRESH_TWIN_TEXTS))
def test_fresh_twin_masks_equal_the_direct_walk(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A configuration whose lexemes are all complete takes the mask of its fresh twin (the position
    past their ends); along a real path each such mask equals the one walked from the configuration
    itself, on a separate automaton with the shortcut off."""
    info = tokenizer_info("llama3-128k")
    text = constrain.grammars.load(name)
    grammar = Grammar.from_lark(name=name)
    fast = cfg_matcher(token_masks.compile_cfg(grammar, info, build_automaton(parse_lark(text))))
    slow = cfg_matcher(token_masks.compile_cfg(grammar, info, build_automaton(parse_lark(text))))
    auto = fast.compiled.automaton.earley
    twins = 0
    for step, tid in enumerate(
        [*hf_tokenizer("llama3-128k").encode(FRESH_TWIN_TEXTS[name], add_special_tokens=False).ids, None]
    ):
        twin = auto.mask_facts(fast.state, True)[0]
        twins += twin not in (-1, fast.state)
        expected = fast.next_token_mask()
        monkeypatch.setattr(token_masks, "FRESH_EQUIVALENTS", False)
        assert np.array_equal(slow.next_token_mask(), expected), (name, step)
        monkeypatch.setattr(token_masks, "FRESH_EQUIVALENTS", True)
        if tid is not None:
            assert fast.accept_token(tid) and slow.accept_token(tid), (name, step)
    assert twins >= 3, name  # the path goes through complete lexemes (operators, keywords, whitespace)


def test_borrowed_tables_read_and_write_through_without_references() -> None:
    """``fast_step.borrowed`` drops numba's reference counting, not the data: reads and writes go to
    the caller's arrays, and no reference is left behind on them."""
    import sys

    import numba

    from constrain.masks.handle import borrowed

    @numba.njit
    def bump(tabs):  # type: ignore[no-untyped-def]
        t = borrowed(tabs)
        t[1][0, 0] += t[0].sum()
        return t[1][0, 0]

    a = np.arange(5, dtype=np.int64)
    b = np.zeros((2, 3), dtype=np.int32)
    before = (sys.getrefcount(a), sys.getrefcount(b))
    assert bump((a, b)) == 10 and bump((a, b)) == 20
    assert b[0, 0] == 20 and b.sum() == 20
    assert (sys.getrefcount(a), sys.getrefcount(b)) == before
    with pytest.raises(numba.TypingError):
        bump((a, 3))
