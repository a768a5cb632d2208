"""An object's automaton written as a table, without an NFA or a subset construction.

:func:`~.objects.object_graph` describes an object as a graph of members (an expression) that the
algebra turns into an NFA, determinises and minimises: for the small objects of a typical schema that
was a third of the time from schema to automaton (two required properties: about 0.35 ms). In the
common case the result is already deterministic by construction, so :func:`object_table` writes it
directly and only minimises:

* compact separators, named keys in the schema order, no member counts, at most one class of other
  keys (``additionalProperties``);
* the keys that may come next at each place are distinct quoted literals (a JSON string ends at its
  first unescaped quote, so none is a prefix of another) plus the other keys' language, which
  excludes the names: they are read in parallel by a small product built here;
* a value's accepting states never read ``,`` or ``}`` and a key's never read ``:`` (checked), so
  what follows is merged into them.

Anything else returns None and the object is built as before. The result is the same minimal DFA
(checked by tests that build both ways over many schemas).
"""

from __future__ import annotations

import numpy as np

from ..automata import DFA
from ..automata.dfa import class_table, dfa_from_class_arrays, joint_byte_classes, numbered_by_first
from ..budget import state_limit
from ..limits import current_limits

#: Build objects as tables where :func:`object_table` can (tests turn it off to compare).
DIRECT = True
#: Product states of keys read in parallel past which the generic construction is left to do it.
MAX_KEY_STATES = 4096

_OPEN, _CLOSE, _COMMA, _COLON = 0x7B, 0x7D, 0x2C, 0x3A

#: A named key's place: (its quoted text, its value's language or None when it cannot be present, required).
Slot = tuple[bytes, DFA | None, bool]


_WEIGHTS = np.random.default_rng(0x0B1EC7).integers(1, 2**62, size=4096, dtype=np.int64)


def _joint_classes(maps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Byte classes every map of ``maps`` (a class id per byte each) treats alike, numbered by their
    first byte, and that first byte of each: one hash per byte (a collision is caught, and the maps
    are then joined one by one)."""
    stacked = np.stack(maps)
    if len(maps) <= _WEIGHTS.shape[0]:
        with np.errstate(over="ignore"):
            hashed = _WEIGHTS[: len(maps)] @ (stacked + 1)
        _u, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(order.shape[0])
        classes, reps = rank[np.asarray(inverse).reshape(-1)], first[order]
        if np.array_equal(stacked, stacked[:, reps[classes]]):
            return classes, reps
    # here only on a 64-bit collision, or with thousands of distinct values in one object
    classes = numbered_by_first(joint_byte_classes(*maps))
    _u, reps = np.unique(classes, return_index=True)
    return classes, reps


def _columns(dfa: DFA, reps: np.ndarray) -> np.ndarray:
    """``dfa``'s transitions at the bytes ``reps`` (one per joint class), as a new int64 array."""
    table, classes = class_table(dfa)
    return np.asarray(table, dtype=np.int64)[:, np.asarray(classes, dtype=np.int64)[reps]]


def _goes_on(rows: np.ndarray, accepting: np.ndarray, columns: list[int]) -> bool:
    """Whether an accepting state of the table reads one of ``columns``."""
    return bool((rows[accepting][:, columns] >= 0).any())


def object_table(
    slots: list[Slot], tail: list[tuple[DFA, DFA]], counts: tuple[int, int | None], label: str
) -> DFA | None:
    """The minimal DFA of ``{`` members ``}`` for ``slots`` (in order) and ``tail`` (other members
    after them) with compact separators and no member counts; None where the table cannot be written
    this way (the caller builds the graph instead)."""
    if not DIRECT or counts != (0, None) or len(tail) > 1:
        return None
    n = len(slots)
    # first_required[i]: the first required slot at or after place i (n: none, so the other keys
    # and "}" may follow)
    first_required = [n] * (n + 1)
    for i in range(n - 1, -1, -1):
        first_required[i] = i if slots[i][2] else first_required[i + 1]
    # Columns: the joint byte classes of every piece, each key byte and each separator its own.
    values = [v for _, v, _ in slots if v is not None]
    pieces = {id(d): d for d in [*values, *(d for pair in tail for d in pair)]}
    own = np.zeros(256, dtype=np.int64)
    singles = sorted({_OPEN, _CLOSE, _COMMA, _COLON, *(b for q, v, _ in slots if v is not None for b in q)})
    own[singles] = np.arange(1, len(singles) + 1)
    classes, reps = _joint_classes(
        [own, *(np.asarray(class_table(d)[1], dtype=np.int64) for d in pieces.values())]
    )
    col = classes.tolist()
    c_open, c_close, c_comma, c_colon = col[_OPEN], col[_CLOSE], col[_COMMA], col[_COLON]

    # The copies first: each value once, and the other keys' language, as the graph shares them.
    blocks: list[np.ndarray] = []
    size = 0
    copies: dict[int, tuple[int, DFA]] = {}  # slot (n: the other members) -> (first row, its DFA)
    keys_rows: np.ndarray | None = None
    keys_at = -1
    for j, value in [
        *((j, v) for j, (_q, v, _r) in enumerate(slots) if v is not None),
        *((n, v) for _k, v in tail),
    ]:
        rows = _columns(value, reps)
        if _goes_on(rows, value.accepting, [c_comma, c_close]):
            return None  # a value that may go on with "," or "}": not a plain concatenation
        blocks.append(np.where(rows >= 0, rows + size, -1))
        copies[j] = (size, value)
        size += rows.shape[0]
    if tail:
        keys = tail[0][0]
        keys_rows = _columns(keys, reps)
        if _goes_on(keys_rows, keys.accepting, [c_colon]):
            return None
        keys_at = size
        blocks.append(np.where(keys_rows >= 0, keys_rows + size, -1))
        size += keys_rows.shape[0]

    # Then the states written here, as rows of {column: target} (with the other keys' row under
    # them, where those are read in parallel): the start, the end, after "{", after each quoted
    # key, and the keys that may come at a place read in parallel (a product state: the literals
    # still alive with the bytes read, the other keys' state or -1).
    small: list[dict[int, int]] = []
    under: list[int] = []  # the other keys' state each small row continues, or -1

    def new_state(k: int = -1) -> int:
        small.append({})
        under.append(k)
        return size + len(small) - 1

    start, final, after_open = new_state(), new_state(), new_state()
    small[0][c_open] = after_open
    Key = tuple[tuple[tuple[int, int], ...], int]
    product: dict[Key, int] = {}
    pending: list[Key] = []
    key_read: dict[int, int] = {}  # slot -> the state after its quoted key (reads ":")

    def state_of(lits: tuple[tuple[int, int], ...], k: int) -> int | None:
        if not lits:
            return keys_at + k
        if any(pos == len(slots[j][0]) for j, pos in lits):
            if len(lits) > 1 or k >= 0:  # pragma: no cover - distinct names; other keys exclude them
                return None
            j = lits[0][0]
            got = key_read.get(j)
            if got is None:
                got = key_read[j] = new_state()
                at, value = copies[j]
                small[got - size][c_colon] = at + value.start
            return got
        got = product.get((lits, k))
        if got is None:
            if len(product) >= MAX_KEY_STATES:
                return None
            got = product[(lits, k)] = new_state(k)
            pending.append((lits, k))
        return got

    dispatch: dict[int, int] = {}  # place -> the state reading the first byte of its keys
    for i in sorted({0, *(j + 1 if j < n else n for j in copies)}):  # where members end, and 0
        end = first_required[i]
        named = tuple((j, 0) for j in range(i, min(end + 1, n)) if j in copies)
        k0 = tail[0][0].start if tail and end == n else -1
        if named or k0 >= 0:
            got = state_of(named, k0)
            if got is None:
                return None
            dispatch[i] = got
    while pending:
        lits, k = pending.pop()
        row = small[product[(lits, k)] - size]
        advance: dict[int, list[tuple[int, int]]] = {}
        for j, pos in lits:
            advance.setdefault(col[slots[j][0][pos]], []).append((j, pos + 1))
        for c, moved in advance.items():
            k2 = int(keys_rows[k, c]) if k >= 0 and keys_rows is not None else -1
            got = state_of(tuple(moved), k2)
            if got is None:
                return None
            row[c] = got
    # After "{": the first keys, or "}" at once.
    if 0 in dispatch:
        first = dispatch[0]
        if first < size:  # the other keys alone
            under[after_open - size] = first - keys_at
        else:
            small[after_open - size].update(small[first - size])
            under[after_open - size] = under[first - size]
    if first_required[0] == n:
        small[after_open - size][c_close] = final

    written = np.full((len(small), len(reps)), -1, dtype=np.int64)
    over = np.flatnonzero(np.asarray(under) >= 0)
    if over.size and keys_rows is not None:
        k_under = keys_rows[np.asarray(under)[over]]
        written[over] = np.where(k_under >= 0, k_under + keys_at, -1)
    cells = [(i, c, target) for i, row in enumerate(small) for c, target in row.items()]
    if cells:
        at_rows, at_cols, targets = zip(*cells, strict=True)
        written[list(at_rows), list(at_cols)] = targets
    blocks.append(written)
    table = np.concatenate(blocks)
    # After a member: "," and the next keys, or "}" where no required key is left.
    for j, (at, value) in copies.items():
        ends = at + np.flatnonzero(value.accepting)
        place = j + 1 if j < n else n
        if place in dispatch:
            table[ends, c_comma] = dispatch[place]
        if first_required[place] == n:
            table[ends, c_close] = final
    if tail:
        at, tail_value = copies[n]
        table[keys_at + np.flatnonzero(tail[0][0].accepting), c_colon] = at + tail_value.start
    if table.shape[0] > state_limit(current_limits().max_dfa_states):
        return None  # the generic construction refuses it with its own error
    accepting = np.zeros(table.shape[0], dtype=bool)
    accepting[final] = True
    return dfa_from_class_arrays(table.astype(np.int32), accepting, start, classes, label)
