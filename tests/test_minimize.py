"""Hopcroft's refinement: the partial-DFA mode (no edges into the sink, used by prune+minimise) must
give the same partition as the complete mode, on random trimmed automata with many equivalent states;
and a minimised table must accept exactly what the input table accepts (checked by enumeration)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from constrain.automata.minimize import hopcroft, prune_and_minimize


def _canonical(blocks: np.ndarray) -> tuple[int, ...]:
    seen: dict[int, int] = {}
    return tuple(seen.setdefault(b, len(seen)) for b in blocks.tolist())


def _copies_dfa(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random DFA and ``copies`` clones of it wired together: many states are equivalent."""
    n0, k = int(rng.integers(1, 12)), int(rng.integers(1, 5))
    base = np.where(rng.random((n0, k)) < rng.random(), rng.integers(0, n0, (n0, k)), -1)
    copies = int(rng.integers(1, 4))
    trans = np.full((n0 * copies, k), -1, dtype=np.int64)
    for c0, s, c in itertools.product(range(copies), range(n0), range(k)):
        if base[s, c] >= 0:
            trans[c0 * n0 + s, c] = int(rng.integers(0, copies)) * n0 + base[s, c]
    return trans, np.tile(rng.random(n0) < 0.4, copies)


def _live(trans: np.ndarray, acc: np.ndarray, start: int) -> np.ndarray:
    """States reachable from ``start`` that can reach an accepting state (plain Python searches)."""
    n = trans.shape[0]
    reach = {start}
    todo = [start]
    while todo:
        for t in trans[todo.pop()].tolist():
            if t >= 0 and t not in reach:
                reach.add(t)
                todo.append(t)
    coreach = set(np.flatnonzero(acc).tolist())
    changed = True
    while changed:
        changed = False
        for s in range(n):
            if s not in coreach and any(t in coreach for t in trans[s].tolist() if t >= 0):
                coreach.add(s)
                changed = True
    return np.array([s in reach and s in coreach for s in range(n)], dtype=bool)


def _trimmed(trans: np.ndarray, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The live states' table with the sink ``m`` last, its acceptance, and ``m`` (None: no language)."""
    live = _live(trans, acc, 0)
    if not live[0]:
        return None
    ids = np.full(trans.shape[0], -1, dtype=np.int64)
    m = int(live.sum())
    ids[live] = np.arange(m)
    table = np.full((m + 1, trans.shape[1]), m, dtype=np.int64)
    for s in np.flatnonzero(live).tolist():
        for c, t in enumerate(trans[s].tolist()):
            if t >= 0 and live[t]:
                table[ids[s], c] = ids[t]
    acc2 = np.zeros(m + 1, dtype=np.bool_)
    acc2[ids[live]] = acc[live]
    return table, acc2, m


@pytest.mark.parametrize("seed", range(4))
def test_partial_refinement_matches_complete(seed: int) -> None:
    rng = np.random.default_rng(seed)
    checked = merged = 0
    for _ in range(300):
        got = _trimmed(*_copies_dfa(rng))
        if got is None:
            continue
        table, acc2, m = got
        complete = hopcroft(table, acc2)
        partial = hopcroft(table, acc2, m)
        assert _canonical(complete) == _canonical(partial)
        checked += 1
        merged += int(len(set(complete.tolist())) < m + 1)
    assert checked > 100 and merged > 20  # the cases exercised merging, not only distinct states


def _moore_blocks(table: np.ndarray, acc: np.ndarray) -> tuple[int, ...]:
    """The coarsest stable partition by Moore's rounds in plain Python (an oracle independent of the
    kernel): states stay together while their acceptance and their successors' blocks agree."""
    block = [int(a) for a in acc.tolist()]
    while True:
        sig = [(block[s], *(block[t] for t in table[s].tolist())) for s in range(table.shape[0])]
        ids: dict[tuple[int, ...], int] = {}
        new = [ids.setdefault(x, len(ids)) for x in sig]
        if len(ids) == len(set(block)):
            return _canonical(np.asarray(new))
        block = new


@pytest.mark.parametrize("seed", range(3))
def test_refinement_is_the_coarsest_stable_partition(seed: int) -> None:
    """Hopcroft's blocks are exactly Moore's (the Myhill-Nerode classes of the trimmed table), in both
    modes, on tables with many classes and sparse edges (as the JSON Schema automata have)."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(150):
        trans, acc = _copies_dfa(rng)
        if rng.random() < 0.5:  # widen: more classes, most of them without an edge
            extra = int(rng.integers(1, 40))
            wide = np.full((trans.shape[0], trans.shape[1] + extra), -1, dtype=np.int64)
            cols = rng.permutation(wide.shape[1])[: trans.shape[1]]
            wide[:, cols] = trans
            trans = wide
        got = _trimmed(trans, acc)
        if got is None:
            continue
        table, acc2, m = got
        want = _moore_blocks(table, acc2)
        assert _canonical(hopcroft(table, acc2)) == want
        assert _canonical(hopcroft(table, acc2, m)) == want


def _accepts(trans: np.ndarray, acc: np.ndarray, start: int, word: tuple[int, ...]) -> bool:
    s = start
    for c in word:
        s = int(trans[s, c])
        if s < 0:
            return False
    return bool(acc[s])


def test_minimised_table_accepts_the_same_words() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        trans, acc = _copies_dfa(rng)
        k = trans.shape[1]
        got = prune_and_minimize(trans, acc, 0)
        words = [w for n in range(6) for w in itertools.product(range(k), repeat=n)]
        if got is None:
            assert not any(_accepts(trans, acc, 0, w) for w in words)
            continue
        full, acc_out = got
        assert full.shape[0] <= trans.shape[0]
        for w in words:
            assert _accepts(full, acc_out, 0, w) == _accepts(trans, acc, 0, w), w


@pytest.mark.parametrize(("lo", "hi"), [(0, 0), (0, 1), (1, 1), (2, 5), (0, 40), (3, 7), (0, 255)])
def test_known_minimal_tables_equal_the_refined_ones(lo: int, hi: int) -> None:
    """The tables built without refinement (bounded length layers, quoted contents) are the tables the
    full construction gives: trimmed, minimal, numbered alike."""
    from constrain import automata as A
    from constrain.automata.dfa import dfa_byte_classes, dfa_from_class_arrays
    from constrain.json_schema.ecma_regex import search_regex
    from constrain.json_schema.strings import length_dfa, quoted, string_expr

    def same(a: A.DFA, b: A.DFA) -> bool:
        return (
            a.start == b.start
            and np.array_equal(a.transitions, b.transitions)
            and np.array_equal(a.accepting, b.accepting)
        )

    body = length_dfa(lo, hi)
    classes = dfa_byte_classes(body)
    _u, reps = np.unique(classes, return_index=True)
    assert same(body, dfa_from_class_arrays(body.transitions[:, reps], body.accepting, body.start, classes))
    assert same(quoted(body), A.build(string_expr(A.Embed(body))))
    # contents read quotes (escaped), one reads only a quote back into its start (not minimal as built)
    for pattern in ["^[a-z]+$", r"\d{3}-\d{4}", '"', "^(foo|bar)*$", "é+", "^.{2,5}$"]:
        content = A.build(A.Regex(search_regex(pattern), 0, True))
        assert same(quoted(content), A.build(string_expr(A.Embed(content))))
    for raw in [r'(\\")*', r'(\\"|a)*b', 'a"?']:
        content = A.build(A.Regex(raw))
        assert same(quoted(content), A.build(string_expr(A.Embed(content)))), raw


def _minimal_table(trans: np.ndarray, acc: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The oracle for :func:`prune_and_minimize`, in plain Python: trim, merge Moore's blocks, number
    the blocks breadth-first from the start reading columns in order."""
    live = _live(trans, acc, start)
    if not live[start]:
        return None
    states = np.flatnonzero(live).tolist()
    ids = {s: i for i, s in enumerate(states)}
    m = len(states)
    table = np.full((m + 1, trans.shape[1]), m, dtype=np.int64)
    for s in states:
        for c, t in enumerate(trans[s].tolist()):
            if t >= 0 and live[t]:
                table[ids[s], c] = ids[t]
    acc2 = np.array([bool(acc[s]) for s in states] + [False])
    blocks = _moore_blocks(table, acc2)
    sink = blocks[m]
    order = [blocks[ids[start]]]
    for b in order:
        r = blocks.index(b)
        for t in table[r].tolist():
            if blocks[t] != sink and blocks[t] not in order:
                order.append(blocks[t])
    out = np.full((len(order), trans.shape[1]), -1, dtype=np.int32)
    out_acc = np.zeros(len(order), dtype=bool)
    for i, b in enumerate(order):
        r = blocks.index(b)
        out_acc[i] = acc2[r]
        for c, t in enumerate(table[r].tolist()):
            if blocks[t] != sink:
                out[i, c] = order.index(blocks[t])
    return out, out_acc


@pytest.mark.parametrize("seed", range(3))
def test_prune_and_minimize_gives_the_canonical_minimal_table(seed: int) -> None:
    """The kernel's table is exactly the oracle's: unreachable states, dead ends (states that reach no
    accepting one, with edges among themselves and from live states) and any start."""
    rng = np.random.default_rng(200 + seed)
    empty = merged = 0
    for _ in range(200):
        trans, acc = _copies_dfa(rng)
        n, k = trans.shape
        dead = int(rng.integers(0, 4))  # dead-end states: edges only among themselves
        if dead:
            wide = np.full((n + dead, k), -1, dtype=np.int64)
            wide[:n] = trans
            wide[n:] = np.where(rng.random((dead, k)) < 0.5, rng.integers(n, n + dead, (dead, k)), -1)
            holes = rng.random((n, k)) < 0.2
            wide[:n][holes & (trans < 0)] = rng.integers(n, n + dead, int((holes & (trans < 0)).sum()))
            trans, acc = wide, np.concatenate([acc, np.zeros(dead, dtype=bool)])
        start = int(rng.integers(0, trans.shape[0]))
        want = _minimal_table(trans, acc, start)
        got = prune_and_minimize(trans.astype(np.int32), acc, start)
        if want is None:
            assert got is None
            empty += 1
            continue
        assert got is not None
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        merged += int(want[0].shape[0] < int(_live(trans, acc, start).sum()))
    assert empty > 5 and merged > 20


def test_a_class_table_dfa_reads_the_same_before_and_after_expansion() -> None:
    """A DFA built over byte classes answers alike from its class table and from its 256 columns:
    ``class_table``, ``dfa_columns``, ``dfa_byte_classes`` and a pickle round trip, before the first
    read of ``transitions`` and after it (which drops the class table)."""
    import pickle

    from constrain.automata import class_table, dfa_byte_classes, dfa_columns, regex_to_dfa
    from constrain.automata.dfa import DFA

    built = regex_to_dfa(r'"(?:[a-c]+|x[0-9]{2,3})"')
    table, classes = class_table(built)
    full = np.take(table, classes, axis=1)
    cols = np.array([0x22, ord("a"), ord("x"), ord("5"), 0xFF])

    def same_answers(d: DFA) -> None:
        t, c = class_table(d)
        assert np.array_equal(np.take(t, c, axis=1), full)
        assert np.array_equal(dfa_columns(d, cols), full[:, cols])
        assert np.array_equal(dfa_columns(d, 0x22), full[:, 0x22])
        groups = dfa_byte_classes(d)
        assert all(
            np.array_equal(full[:, a], full[:, b]) == (groups[a] == groups[b])
            for a in range(256)
            for b in (0x22, 0x61)
        )
        assert d.num_states == full.shape[0]
        assert d.matches(b'"abca"') and d.matches(b'"x123"') and not d.matches(b'"x1"')

    fresh = DFA(table, built.accepting, built.start, "fresh", classes=classes)
    unexpanded = pickle.loads(pickle.dumps(fresh))  # pickled before any expansion
    same_answers(fresh)  # the class table first; matches() then expands
    same_answers(unexpanded)
    assert np.array_equal(fresh.transitions, full)
    same_answers(fresh)  # expanded: the class table derived again
    same_answers(pickle.loads(pickle.dumps(fresh)))


def _edge_runs_reference(full: np.ndarray) -> np.ndarray:
    """Byte runs of a 256-column table in plain Python: per state, maximal runs of one live target."""
    rows = []
    for s, row in enumerate(full.tolist()):
        b = 0
        while b < 256:
            e = b
            while e + 1 < 256 and row[e + 1] == row[b]:
                e += 1
            if row[b] >= 0:
                rows.append((s, b, e, row[b]))
            b = e + 1
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


@pytest.mark.parametrize("seed", range(3))
def test_class_edge_runs_are_the_runs_of_the_expanded_table(seed: int) -> None:
    """The embedding's edges, read from a class table, are the byte runs of its 256 columns: classes
    that are not contiguous, neighbouring classes with one target, dead columns."""
    from constrain.automata.nfa import class_edge_runs

    rng = np.random.default_rng(300 + seed)
    for _ in range(60):
        k = int(rng.integers(1, 12))
        classes = np.sort(rng.integers(0, k, 256)) if rng.random() < 0.5 else rng.integers(0, k, 256)
        classes = np.unique(classes, return_inverse=True)[1].reshape(-1).astype(np.int64)
        k = int(classes.max()) + 1
        n = int(rng.integers(1, 8))
        table = np.where(rng.random((n, k)) < 0.6, rng.integers(0, 3, (n, k)), -1).astype(np.int32)
        table.setflags(write=False)
        got = class_edge_runs(table, classes)
        assert np.array_equal(got, _edge_runs_reference(np.take(table, classes, axis=1)))
