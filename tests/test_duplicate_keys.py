"""No object repeats a key under a JSON Schema (issue 20, item 3), with exact masks.

Oracles: ``json.loads`` with an ``object_pairs_hook`` that refuses a repeated key, ``jsonschema``, and a
small JSON prefix reader whose strings are decoded by ``json.decoder.scanstring`` (escapes and surrogate
pairs as ``json.loads`` decodes them). Masks are compared at every byte of walked texts with the
automaton's own mask less the quote-holding tokens the oracle says would close a repeated key, and with
``accept_token`` itself. Real tokenizers (SmolLM2, Llama-3) and the real default model.
"""

from __future__ import annotations

import json
import re
from json.decoder import scanstring
from typing import Any

import numpy as np
import pytest

import constrain
from constrain import CompileBudget, Grammar, GrammarMatcher, budget_scope, compile

from .shared_data import hf_tokenizer, tokenizer_info

TOKENIZERS = ["smollm2-49k", "llama3-128k"]
OPEN = {"type": "object", "minProperties": 2}
PATTERN = {
    "type": "object",
    "patternProperties": {"^x": {"type": "integer"}},
    "additionalProperties": False,
    "minProperties": 2,
}
MIXED = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "a": {"type": "integer"}},
    "patternProperties": {"^x": {"type": "string"}},
    "additionalProperties": {"type": "integer"},
}
NESTED = {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": True}}
TREE = {  # recursive: the Earley engine
    "type": "object",
    "properties": {"children": {"type": "array", "items": {"$ref": "#"}}},
    "additionalProperties": {"type": "integer"},
}


# ---- oracles ------------------------------------------------------------------------------------------
class _Repeated(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Repeated(keys)
    return dict(pairs)


def has_repeated_key(text: str) -> bool:
    """Oracle: whether the complete JSON ``text`` has an object with a key twice (``json.loads``)."""
    try:
        json.loads(text, object_pairs_hook=_pairs)
    except _Repeated:
        return True
    return False


def closes_repeated_key(data: bytes) -> bool:
    """Oracle: whether the JSON prefix ``data`` holds an object with a closed key twice; strings are
    decoded by ``json.decoder.scanstring``, a string left open at the end is ignored."""
    s = data.decode("utf-8", "surrogateescape")
    stack: list[list[Any]] = []  # [the keys (None for an array), the next string is a key]
    i = 0
    while i < len(s):
        c = s[i]
        if c == '"':
            try:
                value, i = scanstring(s, i + 1, False)
            except ValueError:  # open at the end
                return False
            if stack and stack[-1][0] is not None and stack[-1][1]:
                if value in stack[-1][0]:
                    return True
                stack[-1][0].add(value)
                stack[-1][1] = False
            continue
        if c == "{":
            stack.append([set(), True])
        elif c == "[":
            stack.append([None, False])
        elif c in "}]" and stack:
            stack.pop()
        elif c == "," and stack and stack[-1][0] is not None:
            stack[-1][1] = True
        i += 1
    return False


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _partial_string_ok(rest: str) -> bool:
    """Whether ``rest`` (after an opening quote, to the end of the input) can go on to a JSON string."""
    for tail in ('"', 'n"', '0"', '00"', '000"', '0000"'):
        try:
            _, end = scanstring(rest + tail, 0, True)
        except ValueError:
            continue
        if end == len(rest) + len(tail):
            return True
    return False


def valid_json_prefix(data: bytes) -> bool:
    """Oracle: whether ``data`` starts some JSON text (strings read by ``json.decoder.scanstring``)."""
    try:
        return _scan(data.decode("utf-8")) != "bad"
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":
            return False
        # a character cut at the end: valid where a whole one there would be, inside a string
        return _scan(data[: exc.start].decode("utf-8") + "é") == "string"


def _scan(s: str) -> str:
    """``"bad"``, ``"string"`` (a valid prefix that ends inside a string) or ``"ok"``."""
    stack: list[str] = []
    want = "value"  # value | key | colon | after (a value ended)
    first = True  # just after "{" or "[": "}" or "]" may come
    i = 0
    while i < len(s):
        c = s[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == '"':
            if want not in ("value", "key"):
                return "bad"
            try:
                _, i = scanstring(s, i + 1, True)
            except ValueError:
                return "string" if _partial_string_ok(s[i + 1 :]) else "bad"
            want, first = ("colon" if want == "key" else "after"), False
            continue
        if want == "colon":
            if c != ":":
                return "bad"
            want = "value"
        elif c in "}]":
            if not stack or stack[-1] != c or not (want == "after" or first):
                return "bad"
            stack.pop()
            want = "after"
        elif c == ",":
            if want != "after" or not stack:
                return "bad"
            want = "key" if stack[-1] == "}" else "value"
        elif want != "value":
            return "bad"
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
            want, first = ("key" if c == "{" else "value"), True
            i += 1
            continue
        else:
            m = re.match(r"[-+0-9.eE]+|[a-z]+", s[i:])
            if m is None:
                return "bad"
            run = m.group()
            end = i + len(run) == len(s)
            if run[0].isalpha():
                if not any(w == run or (end and w.startswith(run)) for w in ("true", "false", "null")):
                    return "bad"
            elif not any(_NUMBER.fullmatch(run + tail) for tail in (("", "0") if end else ("",))):
                return "bad"
            i += len(run)
            want = "after"
        first = False
        i += c in ":}],"
    return "ok"


# ---- helpers ------------------------------------------------------------------------------------------
def _matcher(schema: Any, tok: str, **options: Any) -> GrammarMatcher:
    # No compile time limit: the first compile in a process also JIT-compiles the mask kernels, which
    # took up to 6 s of the default 7 s budget on a loaded 2-core machine.
    with budget_scope(CompileBudget(seconds=None)):
        grammar = Grammar.from_json_schema(schema, **options)
        return GrammarMatcher(compile(grammar, tokenizer_info(tok)))


def _ids(row: np.ndarray, vocab: int) -> set[int]:
    bits = np.unpackbits(np.ascontiguousarray(row).view(np.uint8), bitorder="little")
    return set(np.flatnonzero(bits[:vocab]).tolist())


def _fill(m: GrammarMatcher) -> set[int]:
    """The allowed ids from fill_next_token_bitmask, twice on one torch bitmask (the second fill takes
    the hot path), checked equal to next_token_mask's."""
    import torch

    vocab = m.compiled.tokenizer_info.vocab_size
    bitmask = constrain.allocate_token_bitmask(1, vocab)
    m.fill_next_token_bitmask(bitmask, 0)
    first = _ids(bitmask.numpy()[0], vocab)
    bitmask.fill_(-1)
    m.fill_next_token_bitmask(bitmask, 0)
    second = _ids(bitmask.numpy()[0], vocab)
    assert first == second == _ids(m.next_token_mask(), vocab)
    assert isinstance(bitmask, torch.Tensor)
    return first


def _walk_tokens(m: GrammarMatcher, tok: str, text: str) -> int:
    """Feed ``text`` as the tokenizer encodes it; the number of tokens accepted."""
    info = tokenizer_info(tok)
    ids = hf_tokenizer(tok).encode(text, add_special_tokens=False).ids
    assert b"".join(info.token_bytes[i] for i in ids) == text.encode()
    for n, t in enumerate(ids):
        if not m.accept_token(t):
            return n
    return len(ids)


# ---- the cases --------------------------------------------------------------------------------
REJECTED = [
    (OPEN, '{"x":1,"x":2}'),
    (PATTERN, '{"x":1,"x":2}'),
    (PATTERN, '{"x1":1,"x2":2,"x1":3}'),
    (MIXED, '{"id":1,"b":2,"b":3}'),
    (MIXED, '{"id":1,"x1":"a","id":2}'),  # a named key again, as an additional one
    (MIXED, '{"a":1,"x":"","a":2}'),
    (OPEN, '{"é":1,"é":2}'),
    (OPEN, '{"😀":1,"😀":2}'),
    (OPEN, '{"\\"":1,"\\"":2}'),  # canonical escapes (the only spellings a schema's language has)
    (OPEN, '{"a\\"b":1,"a\\"b":2}'),
    (OPEN, '{"\\\\":1,"\\\\":2}'),
    (OPEN, '{"\\n":1,"\\n":2}'),
    (OPEN, '{"\\u0001":1,"\\u0001":2}'),
    (OPEN, '{"":1,"":2}'),
    (NESTED, '{"a":{"k":1,"k":2}}'),
    (NESTED, '{"a":{"k":1},"a":{"k":1}}'),
    (TREE, '{"children":[{"a":1},{"a":2,"b":3,"a":4}]}'),
    (TREE, '{"children":[],"a":1,"children":[]}'),
]
ACCEPTED = [
    (OPEN, '{"x":1,"y":2}'),
    (PATTERN, '{"x":1,"xx":2}'),
    (MIXED, '{"id":1,"x1":"a","i":2}'),
    (OPEN, '{"\\"":1,"\\\\":2,"\\n":3,"\\u0001":4,"\\"\\"":5}'),
    (OPEN, '{"":1," ":2}'),
    (NESTED, '{"a":{"k":1},"b":{"k":1,"a":{"k":2}}}'),
    (OPEN, '{"k":[{"k":1},{"k":2}],"x":{"k":{"k":3}}}'),
    (TREE, '{"children":[{"children":[{"a":1}],"a":1},{"a":2}],"a":1}'),  # named keys come first
]


@pytest.mark.parametrize("tok", TOKENIZERS)
@pytest.mark.parametrize(("schema", "text"), REJECTED)
def test_repeated_key_is_rejected_at_its_closing_quote(tok: str, schema: Any, text: str) -> None:
    assert has_repeated_key(text)
    m = _matcher(schema, tok)
    data = text.encode()
    # byte by byte: everything up to the repeated key's closing quote is accepted, that quote is not
    for i in range(len(data)):
        if not m.accept_bytes(data[i : i + 1]):
            assert closes_repeated_key(data[: i + 1]) and not closes_repeated_key(data[:i])
            break
    else:
        pytest.fail(f"{text} was accepted")
    # as the tokenizer encodes it: the token holding that quote is refused
    m.reset()
    info = tokenizer_info(tok)
    ids = hf_tokenizer(tok).encode(text, add_special_tokens=False).ids
    n = _walk_tokens(m, tok, text)
    assert n < len(ids)
    assert closes_repeated_key(b"".join(info.token_bytes[t] for t in ids[: n + 1]))
    assert not closes_repeated_key(b"".join(info.token_bytes[t] for t in ids[:n]))


@pytest.mark.parametrize("tok", TOKENIZERS)
@pytest.mark.parametrize(("schema", "text"), ACCEPTED)
def test_distinct_keys_are_accepted(tok: str, schema: Any, text: str) -> None:
    import jsonschema

    assert not has_repeated_key(text)
    jsonschema.validate(json.loads(text), schema)
    m = _matcher(schema, tok)
    ids = hf_tokenizer(tok).encode(text, add_special_tokens=False).ids
    assert _walk_tokens(m, tok, text) == len(ids) and m.can_end()
    m.reset()
    assert m.accept_bytes(text) and m.can_end()


def test_min_properties_counts_distinct_keys() -> None:
    m = _matcher({"type": "object", "minProperties": 2, "maxProperties": 2}, "smollm2-49k")
    assert not m.accept_bytes(b'{"x":1,"x":2}')
    assert m.accept_bytes(b'{"x":1,"y":2}') and m.can_end()


def test_validate_json_refuses_a_repeated_key() -> None:
    from constrain.generation import validate_json

    assert validate_json('{"a":1,"b":{"a":2}}', {"type": "object"}) == {"a": 1, "b": {"a": 2}}
    with pytest.raises(constrain.OutputValidationError, match="repeats the key 'a'"):
        validate_json('{"b":{"a":1,"a":2}}', {"type": "object"})


def test_regex_grammars_are_not_json_aware() -> None:
    info = tokenizer_info("smollm2-49k")
    m = GrammarMatcher(compile(Grammar.from_regex(r'\{"x":1,"x":2\}'), info))
    assert m.accept_bytes(b'{"x":1,"x":2}') and m.can_end()


# ---- the tracker alone, on any spelling -----------------------------------------------------------------
# A schema's language spells each key one way (json.dumps's); the tracker decodes any spelling.
SPELLINGS = [
    ('{"a":1,"\\u0061":2}', True),
    ('{"\\u00e9":1,"\\u00E9":2}', True),
    ('{"é":1,"\\u00e9":2}', True),
    ('{"\\ud83d\\ude00":1,"😀":2}', True),
    ('{"\\"":1,"\\u0022":2}', True),
    ('{"\\\\":1,"\\u005c":2}', True),
    ('{"\\/":1,"/":2}', True),
    ('{"k":{"\\u0078":1,"x":2}}', True),
    ('{"\\ud83d":1,"\\ude00":2,"\\ud83d\\ude00":3}', False),  # two lone surrogates and their pair
    ('{"\\u0078":{"x":1},"y":[{"x":2},{"\\u0078":3}]}', False),
]


@pytest.mark.parametrize(("text", "repeated"), SPELLINGS)
def test_tracker_decodes_escapes(text: str, repeated: bool) -> None:
    from constrain.json_keys import START, key_tables

    assert has_repeated_key(text) == repeated
    tables = key_tables(tokenizer_info("smollm2-49k"))
    data = text.encode()
    pos: Any = START
    for i in range(len(data)):
        pos = tables.feed(pos, data[i : i + 1])
        if pos is None:
            assert repeated and closes_repeated_key(data[: i + 1]) and not closes_repeated_key(data[:i])
            return
    assert not repeated


TRACKED = (
    '{"a":1,"\\u00e9x":2,"\\ud83d\\ude00":3,"\\u0022":4,"\\/":5,"":6,",":7,"b":{"c":{},"":8},"d\\\\":9,"z":0}'
)


@pytest.mark.parametrize("tok", TOKENIZERS)
def test_tracker_masks_are_exact_on_any_spelling(tok: str) -> None:
    """Where the automaton allows every token, the tracker bans exactly the quote-holding tokens that
    close a repeated key, at every byte (inside escapes and UTF-8 characters too)."""
    from constrain.json_keys import START, key_tables

    info = tokenizer_info(tok)
    tables = key_tables(info)
    tb = info.token_bytes
    quoted = [t for t in range(info.vocab_size) if b'"' in tb[t]]
    ones = np.full((info.vocab_size + 31) // 32, -1, dtype=np.int32)
    data = TRACKED.encode()
    assert not has_repeated_key(TRACKED)
    pos: Any = START
    watched = 0
    for i in range(len(data) + 1):
        prefix = data[:i]
        # the automaton allows only tokens that keep the output JSON: the others do not count
        valid = {t for t in quoted if valid_json_prefix(prefix + tb[t])}
        got = set(tables.banned(pos, ones)) & valid
        want = {t for t in valid if closes_repeated_key(prefix + tb[t])}
        assert got == want, (prefix, [tb[t] for t in sorted(got ^ want)][:10])
        watched += bool(want)
        if i < len(data):
            pos = tables.feed(pos, data[i : i + 1])
            assert pos is not None
    assert watched > 10


# ---- exact masks ----------------------------------------------------------------------------------------
WALKS = [
    (NESTED, '{"a":{"a":1,"ab":2,"abc":{"a":[1,{"a":2}],"b":"a"},"":0,"b":[],"a\\"q":1,"a\\\\":2}}'),
    (OPEN, '{"é":1,"è":2,"😀x":3,"\\\\":4,"\\n\\"":5,"日本":6,"日":7,"本日":8,"\\u0001":9,"\\u0001a":0}'),
    (MIXED, '{"id":1,"x1":"a","x":"b","i":2,"ix":3}'),
    (TREE, '{"children":[{"a":1,"ab":2},{"children":[],"b":3}],"a":1,"chi":2}'),
]


def _oracle_allowed(m: GrammarMatcher, prefix: bytes) -> set[int]:
    """The automaton's allowed ids less the quote-holding tokens that close a repeated key."""
    info = m.compiled.tokenizer_info
    allowed = _ids(m.compiled.state_mask(m.state), info.vocab_size)
    tb = info.token_bytes
    return {t for t in allowed if b'"' not in tb[t] or not closes_repeated_key(prefix + tb[t])}


@pytest.mark.parametrize("tok", TOKENIZERS)
@pytest.mark.parametrize(("schema", "text"), WALKS)
def test_masks_are_exact_at_every_byte(tok: str, schema: Any, text: str) -> None:
    rng = np.random.default_rng(0)
    m = _matcher(schema, tok)
    tb = m.compiled.tokenizer_info.token_bytes
    data = text.encode()
    banned_somewhere = 0
    for i in range(len(data) + 1):
        prefix = data[:i]
        got = _fill(m)
        want = _oracle_allowed(m, prefix)
        assert got == want, (prefix, sorted(got ^ want)[:10])
        banned_somewhere += len(_ids(m.compiled.state_mask(m.state), len(tb)) - got)
        # accept_token agrees: every quote token the automaton allows, and a sample of the others
        auto = sorted(_ids(m.compiled.state_mask(m.state), len(tb)))
        quoted = [t for t in auto if b'"' in tb[t]]
        others = [t for t in auto if b'"' not in tb[t]]
        sample = (
            quoted + rng.choice(others, size=min(50, len(others)), replace=False).tolist()
            if others
            else quoted
        )
        for t in sample:
            ok = m.accept_token(int(t))
            if ok:
                m.rollback(1)
            assert ok == (int(t) in got), (prefix, tb[t])
        if i < len(data):
            assert m.accept_bytes(data[i : i + 1])
    assert m.can_end()
    assert banned_somewhere > 0


@pytest.mark.parametrize("tok", TOKENIZERS)
def test_rollback_and_fork_keep_the_keys_consistent(tok: str) -> None:
    text = '{"a":1,"b":{"a":2,"c":3},"c":4,"ab":5}'
    m = _matcher(OPEN, tok)
    n = _walk_tokens(m, tok, text)
    ids = hf_tokenizer(tok).encode(text, add_special_tokens=False).ids
    assert n == len(ids)
    for back in range(len(ids) + 1):
        twin = m.fork()
        twin.rollback(back)
        fresh = _matcher(OPEN, tok)
        for t in ids[: len(ids) - back]:
            assert fresh.accept_token(t)
        assert _fill(twin) == _fill(fresh), back
    # a fork is independent: keys added on it do not reach the original
    m.reset()
    assert m.accept_bytes(b'{"a":1')
    twin = m.fork()
    assert twin.accept_bytes(b',"zz":1')
    assert not twin.accept_bytes(b',"zz"')
    assert m.accept_bytes(b',"zz":1')
    m.reset()
    assert m.accept_bytes(b'{"a":1,"a')
    assert not m.accept_bytes(b'"')
    assert m.accept_bytes(b'b"')


def test_forced_continuation_stops_before_a_repeated_key() -> None:
    # Only "a" may be a key, and two members are required: the language of distinct keys is empty, the
    # automaton (which cannot count distinct keys) forces ',"a":' after the first member.
    m = _matcher({"type": "object", "propertyNames": {"const": "a"}, "minProperties": 2}, "smollm2-49k")
    assert m.forced_bytes() == b'{"a":'
    assert m.accept_bytes(b'{"a":1,')
    assert m.forced_bytes() == b'"a'  # the automaton forces '"a":'; the quote would repeat "a"
    forced = m.forced_bytes()
    info = m.compiled.tokenizer_info
    toks = m.forced_tokens()
    assert not closes_repeated_key(b'{"a":1,' + b"".join(info.token_bytes[t] for t in toks))
    twin = m.fork()
    for t in toks:
        assert twin.accept_token(t)
    assert twin.accept_bytes(forced[len(b"".join(info.token_bytes[t] for t in toks)) :])
    assert not _fill(twin)  # a dead end: nothing may follow


@pytest.mark.parametrize("schema", [OPEN, TREE])
def test_completion_avoids_a_repeated_key(schema: Any) -> None:
    m = _matcher(schema, "smollm2-49k")
    assert m.accept_bytes(b'{"a":1,"a')
    tail = m.completion_bytes()
    assert not has_repeated_key('{"a":1,"a' + tail.decode())
    twin = m.fork()
    assert twin.accept_bytes(tail) and twin.can_end()
    toks = m.shortest_completion()
    for t in toks:
        assert m.accept_token(t)
    assert m.can_end()


def test_awrs_never_draws_a_repeated_key() -> None:
    from constrain.sampling.awrs import awrs_argmax, awrs_sample

    m = _matcher(OPEN, "smollm2-49k")
    assert m.accept_bytes(b'{"ab":1,"ab')
    info = m.compiled.tokenizer_info
    closing = [info.token_ids_by_bytes[b'"'], info.token_ids_by_bytes[b'":']]
    other = info.token_ids_by_bytes[b"c"]
    words = m.compiled.state_mask(m.state).view(np.uint32)
    assert all(words[t >> 5] >> (t & 31) & 1 for t in closing)  # the automaton alone allows them
    lp = np.full(info.vocab_size, -np.inf)
    lp[closing] = np.log(0.45)
    lp[other] = np.log(0.1)
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert awrs_sample(lp, m, rng).token == other
    assert awrs_argmax(lp, m).token == other
    assert m.num_steps == 1


def test_hf_processor_masks_a_repeated_key(lm: tuple[Any, Any]) -> None:
    import torch

    from constrain.adapters.hf import JSONSchemaLogitsProcessor

    _, tok = lm
    proc = JSONSchemaLogitsProcessor(OPEN, tok)
    prompt = tok("JSON:", return_tensors="pt").input_ids
    prefix = tok('{"ab":1,"ab', add_special_tokens=False).input_ids
    closing = tok.convert_tokens_to_ids('":')
    assert isinstance(closing, int) and closing != tok.unk_token_id
    ids = prompt
    for t in prefix:  # one call per step, as generate makes them
        scores = torch.zeros(1, proc.info.vocab_size)
        proc(ids, scores)
        assert torch.isfinite(scores[0, t])
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
    scores = torch.zeros(1, proc.info.vocab_size)
    proc(ids, scores)
    assert scores[0, closing] == float("-inf")
    assert torch.isfinite(scores[0, tok.convert_tokens_to_ids("c")])


# ---- generation with the real model ---------------------------------------------------------------------
GENERATED = [
    {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 3},
    {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}},
        "required": ["name"],
        "patternProperties": {"^tag": {"type": "string", "maxLength": 8}},
        "additionalProperties": {"type": "integer"},
        "minProperties": 3,
        "maxProperties": 5,
    },
]
# The prompt repeats keys: prompt-lookup drafting proposes them, the matcher must refuse them.
PROMPT = 'Repeat this JSON exactly: {"x": 1, "x": 2, "x": 3, "tag": "a", "tag": "b"}. Answer: '


@pytest.mark.parametrize("schema", GENERATED)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generated_objects_have_distinct_keys(lm: tuple[Any, Any], schema: Any, temperature: float) -> None:
    import jsonschema

    model, tok = lm
    for seed in (0, 1) if temperature else (0,):
        text = constrain.generate(
            PROMPT,
            schema=schema,
            model=model,
            tokenizer=tok,
            max_new_tokens=64,
            temperature=temperature,
            seed=seed,
            on_budget="complete",
            whitespace="flexible",
        )
        assert not has_repeated_key(text), text
        jsonschema.validate(json.loads(text), schema)


def test_generated_batch_has_distinct_keys(lm: tuple[Any, Any]) -> None:
    import jsonschema

    model, tok = lm
    schema = GENERATED[0]
    results = constrain.generate_json_batch(
        schema,
        [PROMPT, "Count in JSON: "],
        model=model,
        tokenizer=tok,
        max_new_tokens=48,
        on_budget="complete",
    )
    for r in results:
        assert r.ok, r.error
        assert r.text is not None and not has_repeated_key(r.text), r.text
        jsonschema.validate(r.value, schema)
