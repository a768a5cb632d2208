"""A scannerless Earley recogniser over bytes, determinised lazily into an automaton of configurations.

Method: Earley over terminals, with each terminal recognised by its own byte DFA
(:func:`constrain.automata.regex_to_dfa`). We chose Earley because Lark grammars may be ambiguous or
outside LALR(1) (Lark's own default parser is Earley), and a constraint engine must accept every
string of the language, not only those one LR table can parse. Terminal priorities only choose
between parse trees in Lark; they do not change which strings are accepted, so they are ignored here.
``%ignore`` terminals may appear before, between and after terminals.

Lexing rule (maximal munch with one byte of lookahead). Lark's default Earley lexer
(``lexer="dynamic"``, ``lark/parsers/xearley.py``) scans each expected terminal (and each ``%ignore``
terminal) at each position with ``regex.match(text, i)``: one match per terminal and position, the
one Python's backtracking engine returns, which for Lark's greedy terminals is the longest match
(Lark also sorts literal alternatives longest first). The longest match needs unbounded lookahead
(``1.`` may still become ``1.5`` or fall back to ``1``), which a left-to-right automaton cannot
decide without carrying every fallback. We implement the rule a streaming lexer can decide: a
lexeme of terminal ``T`` ends at position ``j`` exactly when its DFA is accepting at ``j`` and the
byte at ``j`` cannot continue it (or the input ends at ``j``). The lexeme is extended greedily
while the next byte keeps ``T``'s DFA alive, and the boundary is decided on the byte that kills it.
Each terminal is lexed on its own (a keyword ``"if"`` ends after ``if`` while ``NAME`` may go on
reading ``ifx``), exactly as in Lark. Every end this rule allows is also Lark's longest match, so
the language is a subset of Lark's ``lexer="dynamic"`` language; it differs only where a terminal
could be extended by the next byte and then dies before accepting again (Python ``1else``: the
``e`` may start an exponent, so ``NUMBER`` may not end after ``1``; Lark backtracks to ``1``). The
tests use Lark's own Earley parser with this rule plugged in as its terminal matcher as the exact
oracle, and plain ``lexer="dynamic"`` as a second oracle for every generated string.

Consequence for completability: under a longest-match rule a productive grammar may still have
strings that cannot be finished (``start: A B``, ``A: /a+/``, ``B: /a/`` generates nothing).
Every shipped grammar ends each lexeme on some byte that starts what may follow it (or on an
``%ignore`` whitespace), so their configurations all stay completable; the token masks (which
allow tokens that stay inside one lexeme without asking the parser) rely on this.

Why it is fast enough: Earley sets are hash-consed into *nodes*. A node holds the items waiting at
one position, each item pointing at the node where it started (its origin) rather than at a
position, so two positions with the same pending items and the same origins up the chain are the
same node and have the same future. A *configuration* is the set of lexemes in progress
``(start node, terminal, DFA state)``; where a lexeme ends is decided by the next byte, so a
boundary is never a configuration of its own (the start configuration holds fresh lexemes at the
root). The node after a set of lexeme ends is cached by that set (:meth:`EarleyAutomaton.end_node`).
Configurations are interned too, so the recogniser is a deterministic automaton over
configurations, built lazily: ``trans[c, byte]`` (stored once per byte class) is ``-2`` until first
needed, then the next configuration or ``-1``. Inside a JSON string the configuration repeats byte
after byte, so a string is a self-loop, and the k-th element of a list reaches the same nodes as the third
(Lark expands ``x*`` with left recursion). Rollback and fork are a list of configuration ids.

The byte steps run in numba over flat tables (:mod:`constrain.cfg.fast_step`): configurations, sets of
lexeme ends and nodes are interned int arrays, and a step fills its whole byte class (bytes every terminal
DFA treats alike). The Earley closure that builds a new node runs there too, inside the step: a mask walk
at a new position may need a hundred nodes (arithmetic, SQL), and in Python they were most of its cost.
Python only sets the tables up and grows them when a step runs out of room.

Memory follows the live parses, not their history (:meth:`EarleyAutomaton.collect`). Mask walks build
some 25 configurations per new nesting depth that no parse ever stands in, and a deep or long
generation used to keep them all (20,000 nested ``[`` with a mask at each: 1.3 GB; near 64,000 a 4 GiB
``trans`` could not be allocated). Matchers now register their histories; past :data:`TABLE_BUDGET`,
at a call with no configuration in flight, the configurations no history holds are freed with the
nodes only they reach, ``trans`` rows are packed (a configuration keeps its id and finds its row
through ``CFG_ROW``), freed ids are reused, and a rollback that leaves most of the tables unreachable
frees them at once. Searches over states of their own (forced bytes, shortest completion) hold
collections off (:meth:`EarleyAutomaton.hold`).

Nullable symbols use Aycock and Horspool's fix (predicting a nullable symbol also steps over it).
Unproductive rules are dropped first, so every item in a node can still complete (see above for
what the lexing rule adds to that).
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..automata import DFA, column_classes, equivalent_states, regex_to_dfa
from ..exceptions import GrammarError, UnsupportedFeatureError, UnsupportedRegexFeature
from ..masks.handle import new_tables, set_tables
from . import fast_step as fs
from .fast_step import DEAD, NEED_ROOM, UNKNOWN
from .lark_frontend import CFG

Lexeme = tuple[int, int, int]  # (start node, terminal, DFA state)

TABLE_BUDGET = 64 << 20
"""Bytes the automaton's tables may hold before a collection (:meth:`EarleyAutomaton.collect`) frees
the configurations no matcher's history holds, with the Earley nodes only they reached. After one, the
next comes when the tables pass twice what was kept (or this budget, whichever is more): amortised
constant work per configuration built, and memory bounded by the live parses, not their history."""

RELEASE_FLOOR = 8 << 20
"""Tables past this many bytes are collected on a rollback that leaves most of them unreachable (a
JSON document's tables stay below it, so a speculative loop's rollbacks never collect)."""

NO_COMPLETION = 1 << 60
""":meth:`EarleyAutomaton.completion_bound` of a configuration that cannot reach an end."""


@dataclass(frozen=True)
class _Config:
    """A configuration decoded for Python (tests and the reference automaton)."""

    base: int  # the start configuration: the root node; else -1
    lexemes: tuple[Lexeme, ...]  # in progress (fresh ones at the DFA start state in the start config)


@dataclass(eq=False)
class EarleyAutomaton:
    """The lazily built automaton of Earley configurations of one grammar (shared across tokenizers).

    Thread-safe: lookups read ``trans`` without a lock; building new configurations takes one.
    """

    cfg: CFG
    dfas: tuple[DFA, ...]
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        cfg = self.cfg
        nt = cfg.num_terminals
        self.num_terminals = nt
        self.ignore = tuple(i for i, t in enumerate(cfg.terminals) if t.ignore)
        self._is_ignore = [t.ignore for t in cfg.terminals]
        self._init_tables()
        rules = _productive_rules(cfg, [bool(d.accepting.any()) for d in self.dfas])
        if not any(lhs == cfg.start for lhs, _ in rules):
            raise GrammarError(f"rule {cfg.names[cfg.start]!r} generates no string")
        aug = len(cfg.names)  # S' -> start
        rules = [(aug, (cfg.start,)), *rules]
        self._nullable = _nullable(rules, aug + 1)
        next_sym: list[int] = []
        lhs_of: list[int] = []
        first_dr: dict[int, list[int]] = {}
        for lhs, rhs in rules:
            first_dr.setdefault(lhs, []).append(len(next_sym))
            for k in range(len(rhs) + 1):
                next_sym.append(rhs[k] if k < len(rhs) else -1)
                lhs_of.append(lhs)
        self._next_sym = next_sym
        self._lhs = lhs_of
        self._first_dr = first_dr
        self._configs: dict[int, _Config] = {}  # decoded from the tables on first query
        self._final: dict[int, bool] = {}
        self._end_nodes: dict[tuple[int, ...], int] = {}  # by the ends' codes (see fast_step)
        self._bounds: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # see _static_bounds
        self._finish: dict[int, dict[int, int]] = {}  # see _node_finish
        # What a collection (:meth:`collect`) keeps: every configuration in a tracked matcher's history.
        self._tracked: weakref.WeakSet[Any] = weakref.WeakSet()
        # caches keyed by configuration, pruned on collection, by their owner (held weakly)
        self._watched: weakref.WeakKeyDictionary[Any, list[dict[int, Any]]] = weakref.WeakKeyDictionary()
        self._holds = 0  # walks in progress over configurations no history holds: no collection
        self._collect_due = False
        self._budget = TABLE_BUDGET
        self._init_closure_tables(aug + 1)
        root = self._close_seeds([0])  # S' -> . start, origin SELF
        self.start = self.fresh_config(root)

    # ---- pickling: the tables as they are (configuration ids stay valid), no lock or numba handle ---------
    def __getstate__(self) -> dict[str, object]:
        with self.lock:  # a consistent snapshot: the tables grow in place under the lock
            state = dict(self.__dict__)
            state["_tabs"] = [t.copy() for t in self._tabs]
            for name in ("_configs", "_final", "_end_nodes", "_finish"):
                state[name] = dict(state[name])
        for name in ("lock", "handle", "trans", "tables", "_counts"):
            del state[name]
        # Weak references do not pickle; what they track (live matchers, per-mask caches) is rebuilt
        # where the automaton is loaded, and no walk is in progress there.
        weak_types = (weakref.WeakKeyDictionary, weakref.WeakValueDictionary, weakref.WeakSet)
        weak = [(n, type(v)) for n, v in state.items() if isinstance(v, weak_types)]
        for name, _ in weak:
            del state[name]
        state["__weak__"] = weak
        for name, fresh in (("_watched", []), ("_holds", 0), ("_collect_due", False)):
            if name in state:
                state[name] = fresh
        state["dfas"] = tuple((d.accepting, d.start, d.pattern) for d in self.dfas)  # views of GTRANS
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        parts: tuple[tuple[np.ndarray, int, str], ...] = state.pop("dfas")  # type: ignore[assignment]
        for name, kind in state.pop("__weak__", ()):  # type: ignore[attr-defined]
            state[name] = kind()
        self.__dict__.update(state)
        tabs: list[np.ndarray] = state["_tabs"]  # type: ignore[assignment]
        toff = self._toff = tabs[fs.TOFF]
        self.dfas = tuple(
            DFA(tabs[fs.GTRANS][toff[t] : toff[t + 1]], acc, start, pattern)
            for t, (acc, start, pattern) in enumerate(parts)
        )
        # (through __dict__: the attributes are declared where the tables are first made)
        self.__dict__.update(trans=tabs[fs.TRANS], _counts=tabs[fs.COUNTS], tables=tuple(tabs))
        self.lock = threading.RLock()
        self.handle = new_tables(self.tables)

    # ---- the flat tables the byte steps run on (see :mod:`constrain.cfg.fast_step`) -----------------
    def _init_tables(self) -> None:
        sizes = [d.num_states for d in self.dfas]
        toff = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=toff[1:])
        g = int(toff[-1])
        # One table of every terminal's rows (local targets); the terminals' DFAs become views of it.
        gtrans = np.empty((g, 256), dtype=np.int32)
        for t, d in enumerate(self.dfas):
            gtrans[toff[t] : toff[t + 1]] = d.transitions
        self.dfas = tuple(
            DFA(gtrans[toff[t] : toff[t + 1]], d.accepting, d.start, d.pattern)
            for t, d in enumerate(self.dfas)
        )
        gacc = np.concatenate([d.accepting for d in self.dfas]).astype(np.bool_)
        gterm = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        ignore = np.array(self._is_ignore, dtype=np.bool_)
        self._num_g = g
        self._toff = toff
        # bytes that end an accepting lexeme state (row) by killing it: the token masks' first bytes
        self.kill_bytes = gacc[:, None] & (gtrans < 0)
        # Lexeme states with the same future (segment terminals of recursive schemas are copies of a
        # few DFAs) share their token sets: see EarleyTokenMasks._lexeme_sets.
        reps, byte_class = column_classes(gtrans)
        glob = np.where(gtrans >= 0, gtrans + toff[gterm][:, None], -1)
        self.future_class = equivalent_states(glob, gacc, reps)
        counts = np.zeros(fs.N_COUNTS, dtype=np.int64)
        counts[fs.NUM_G] = g
        counts[fs.NUM_T] = len(sizes)
        # Room for 1,024 configurations at first (1 MB of ``trans``): a JSON document needs about
        # 500, and each doubling of ``trans`` later stalls one mask (0.2 ms at 512 rows).
        # One column per byte class (bytes every terminal DFA treats alike step alike): 40 for JSON.
        self.trans: np.ndarray = np.full((1024, int(byte_class.max()) + 1), UNKNOWN, dtype=np.int32)
        self._tabs = [
            gtrans, gacc, gterm, toff, ignore, self.trans,
            np.zeros(2 * 1024 + 2, dtype=np.int64), np.zeros(16384, dtype=np.int64),
            np.full(8192, -1, dtype=np.int64),
            np.zeros(257, dtype=np.int64), np.zeros(1024, dtype=np.int64), np.zeros(256, dtype=np.int64),
            np.full(1024, -1, dtype=np.int64),
            np.zeros(257, dtype=np.int64), np.zeros(1024, dtype=np.int32),
            counts, *_byte_classes(byte_class), np.zeros(1024, dtype=np.int64),
        ]  # fmt: skip
        self._counts = counts
        self.tables = tuple(self._tabs)

    def _init_closure_tables(self, num_symbols: int) -> None:
        """The grammar as flat arrays for the numba closure (:func:`constrain.cfg.fast_step.close`)."""
        nt = self.num_terminals
        pred_off = np.zeros(num_symbols + 1, dtype=np.int64)
        psym_off = np.zeros(num_symbols + 1, dtype=np.int64)
        pred_drs: list[int] = []
        psyms: list[int] = []
        for sym in range(num_symbols):
            if sym >= nt:
                drs, syms = self._prediction(sym)
                pred_drs.extend(sorted(drs))
                psyms.extend(sorted(syms))
            pred_off[sym + 1] = len(pred_drs)
            psym_off[sym + 1] = len(psyms)
        toff = self._toff
        tabs = self._tabs
        tabs += [
            np.array(self._next_sym, dtype=np.int64),
            np.array(self._lhs, dtype=np.int64),
            np.array(self._nullable, dtype=np.bool_),
            pred_off, np.array(pred_drs, dtype=np.int64), psym_off, np.array(psyms, dtype=np.int64),
            np.array([int(toff[t]) + d.start for t, d in enumerate(self.dfas)], dtype=np.int64),
            np.array(self.ignore, dtype=np.int64),
            np.zeros(257, dtype=np.int64), np.zeros(4096, dtype=np.int64), np.full(1024, -1, dtype=np.int64),
            np.full(1024, -1, dtype=np.int64), np.zeros(3 * 512, dtype=np.int64),
            np.zeros(num_symbols, dtype=np.int64),
            np.zeros(0, dtype=np.int64), np.zeros(1024, dtype=np.int64),  # freed ids, rows of ``trans``
        ]  # fmt: skip
        counts = self._counts
        counts[fs.NDR] = len(self._next_sym)
        counts[fs.ACCEPT_DR] = 1  # S' -> start .
        self.tables = tuple(tabs)
        self.handle = new_tables(self.tables)  # what Python passes to the numba steps

    def _prediction(self, sym: int) -> tuple[set[int], set[int]]:
        """The dotted rules (all with origin SELF) that predicting nonterminal ``sym`` adds to a node,
        closed under prediction and nullable step-over, and the nonterminals predicted on the way; the
        same at every node. (Completing a SELF item adds nothing: the step-over covers it.)"""
        next_sym = self._next_sym
        nt = self.num_terminals
        drs: set[int] = set()
        syms = {sym}
        agenda = list(self._first_dr.get(sym, ()))
        while agenda:
            dr = agenda.pop()
            if dr in drs:
                continue
            drs.add(dr)
            s = next_sym[dr]
            if s >= nt:
                if s not in syms:
                    syms.add(s)
                    agenda.extend(self._first_dr.get(s, ()))
                if self._nullable[s]:
                    agenda.append(dr + 1)
        return drs, syms

    def _close_seeds(self, seeds: list[int]) -> int:
        """The node of the closure of item codes ``seeds`` (see :mod:`constrain.cfg.fast_step`)."""
        while True:
            work = self._tabs[fs.WORK]
            if len(seeds) <= work.shape[0] // 3:
                work[: len(seeds)] = seeds
                node = int(fs.close(self.handle, len(seeds), False))
                if node != NEED_ROOM:
                    return node
            else:
                self._counts[fs.WORK_NEED] = 2 * len(seeds)
            self.grow()

    def grow(self) -> None:
        """Make room in every table that is full or about to be: what a numba call that returned
        :data:`~constrain.cfg.fast_step.NEED_ROOM` asks for. Hold :attr:`lock`."""
        tabs = self._tabs
        counts = self._counts
        before = [t.shape for t in tabs]
        nc = int(counts[fs.N_CONFIGS])
        if int(counts[fs.N_ROWS]) + 2 >= tabs[fs.TRANS].shape[0]:
            old = tabs[fs.TRANS]
            grown = np.full((2 * old.shape[0], old.shape[1]), UNKNOWN, dtype=np.int32)
            grown[: old.shape[0]] = old
            tabs[fs.TRANS] = grown
        if nc + 2 >= tabs[fs.CFG_ROW].shape[0] or 2 * nc + 4 > tabs[fs.CFG_OFF].shape[0]:
            ids = 2 * max(tabs[fs.CFG_ROW].shape[0], nc + 2)
            tabs[fs.CFG_ROW] = _grown(tabs[fs.CFG_ROW], ids)
            tabs[fs.CFG_OFF] = _grown(tabs[fs.CFG_OFF], 2 * ids + 2)
        for off_i, pool_i, hash_i, n_i, need_i, stride in (
            (fs.CFG_OFF, fs.CFG_POOL, fs.CFG_HASH, fs.N_CONFIGS, fs.POOL_NEED, 2),
            (fs.END_OFF, fs.END_POOL, fs.END_HASH, fs.N_ENDS, fs.END_POOL_NEED, 1),
        ):
            n = int(counts[n_i])
            if off_i == fs.END_OFF and n + 2 >= tabs[fs.END_NODE].shape[0]:
                size = 2 * tabs[fs.END_NODE].shape[0]
                tabs[fs.END_NODE] = _grown(tabs[fs.END_NODE], size)
                tabs[fs.END_OFF] = _grown(tabs[fs.END_OFF], size + 1)
            used = int(counts[fs.CFG_USED]) if stride == 2 else int(tabs[off_i][n])
            need = max(int(counts[need_i]), used + 1)
            if 2 * need > tabs[pool_i].shape[0]:
                tabs[pool_i] = _grown(tabs[pool_i], 4 * need)
            load = n - int(counts[fs.N_FREE]) if stride == 2 else n  # freed ids are not in the table
            if 4 * (load + 2) > tabs[hash_i].shape[0]:
                # A power of two (the probe sequence masks with size - 1), at most a quarter full.
                table = np.full(1 << (8 * (load + 2)).bit_length(), -1, dtype=np.int64)
                fs.rehash(table, tabs[off_i], tabs[pool_i], n, stride)
                tabs[hash_i] = table
        if counts[fs.SCRATCH_NEED] > tabs[fs.SCRATCH].shape[0]:
            tabs[fs.SCRATCH] = np.zeros(2 * int(counts[fs.SCRATCH_NEED]), dtype=np.int64)
        if len(tabs) > fs.NODE_OFF:
            self._grow_nodes()
        if [t.shape for t in tabs] == before:  # pragma: no cover - a step asked for room no table lacks
            raise RuntimeError("internal error: the Earley tables asked for room but none is full")
        self.trans = tabs[fs.TRANS]
        self.tables = tuple(tabs)
        set_tables(self.handle, self.tables)
        self.table_bytes_cached = self.table_bytes
        if self.table_bytes_cached > self._budget:
            self._collect_due = True  # at the next call that holds no configuration in flight

    def _grow_nodes(self) -> None:
        """The node pool, the fresh-lexeme pool and the closure's scratch (see :meth:`grow`)."""
        tabs = self._tabs
        counts = self._counts
        n = int(counts[fs.N_NODES])
        if n + 2 >= tabs[fs.NODE_OFF].shape[0]:
            tabs[fs.NODE_OFF] = _grown(tabs[fs.NODE_OFF], 2 * tabs[fs.NODE_OFF].shape[0])
        if n + 2 >= tabs[fs.FRESH_OFF].shape[0]:
            tabs[fs.FRESH_OFF] = _grown(tabs[fs.FRESH_OFF], 2 * tabs[fs.FRESH_OFF].shape[0])
        need = max(int(counts[fs.NODE_POOL_NEED]), int(tabs[fs.NODE_OFF][n]) + 1)
        if 2 * need > tabs[fs.NODE_POOL].shape[0]:
            tabs[fs.NODE_POOL] = _grown(tabs[fs.NODE_POOL], 4 * need)
        fresh_need = int(tabs[fs.FRESH_OFF][n]) + self.num_terminals
        if 2 * fresh_need > tabs[fs.FRESH_POOL].shape[0]:
            tabs[fs.FRESH_POOL] = _grown(tabs[fs.FRESH_POOL], 4 * fresh_need)
        if 4 * (n + 2) > tabs[fs.NODE_HASH].shape[0]:
            table = np.full(1 << (8 * (n + 2)).bit_length(), -1, dtype=np.int64)
            fs.rehash(table, tabs[fs.NODE_OFF], tabs[fs.NODE_POOL], n, 1)
            tabs[fs.NODE_HASH] = table
        work_need = int(counts[fs.WORK_NEED])
        if 3 * work_need > tabs[fs.WORK].shape[0]:
            tabs[fs.WORK] = np.zeros(3 * 2 * work_need, dtype=np.int64)
        if 2 * work_need > tabs[fs.SEEN].shape[0]:
            tabs[fs.SEEN] = np.full(1 << (4 * work_need).bit_length(), -1, dtype=np.int64)

    # ---- memory: collecting what no live parse reaches ----------------------------------------------
    @property
    def table_bytes(self) -> int:
        """Bytes held by the flat tables (``trans``, the pools and their hash tables, the scratch)."""
        return sum(t.nbytes for t in self._tabs)

    @property
    def num_live_configs(self) -> int:
        """Configurations held now (built and not freed by a collection)."""
        return int(self._counts[fs.N_CONFIGS] - self._counts[fs.N_FREE])

    def track(self, matcher: Any) -> None:
        """Keep every configuration in ``matcher._history`` (its list of states) through collections,
        for as long as the matcher lives (held weakly)."""
        with self.lock:
            self._tracked.add(matcher)

    def watch_states(self, cache: dict[int, Any], owner: Any) -> None:
        """Drop the entries of ``cache`` (keyed by configuration) whose configuration a collection
        frees, for as long as ``owner`` lives (held weakly): a freed id is reused for another one."""
        with self.lock:
            caches = self._watched.setdefault(owner, [])
            if not any(c is cache for c in caches):
                caches.append(cache)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """No collection while inside: for searches that keep configurations no history holds
        (forced-byte walks, shortest completions)."""
        with self.lock:
            self._holds += 1
        try:
            yield
        finally:
            with self.lock:
                self._holds -= 1

    def maybe_collect(self, *roots: int) -> None:
        """Collect if the tables passed their budget, keeping ``roots`` too. Hold :attr:`lock`; call only
        where no configuration but those of tracked histories and ``roots`` is in flight."""
        if self._collect_due and not self._holds:
            self.collect(roots)

    def released(self) -> None:
        """A tracked history shrank (rollback, reset): collect if the tables are past
        :data:`RELEASE_FLOOR` and most of what they hold is no longer in any history (what was rolled
        back is then freed; amortised: after a collection the tables must grow fourfold again)."""
        if not self._collect_due and self.table_bytes_cached <= RELEASE_FLOOR:
            return
        with self.lock:
            if self._holds:
                return
            live = 1 + sum(len(getattr(m, "_history", ())) for m in list(self._tracked))
            if self._collect_due or 4 * live < self.num_live_configs:
                self.collect(())

    table_bytes_cached = 0  # :attr:`table_bytes` at the last growth or collection

    def collect(self, roots: Iterable[int] = ()) -> None:
        """Free every configuration that neither a tracked history nor ``roots`` holds, and the Earley
        nodes and lexeme ends only they reached; shrink the tables to what is kept. Live
        configurations keep their ids (matchers hold them); freed ids are reused lowest first, and
        every cache keyed by configuration (masks, finality, forced tokens) forgets them. Nodes are
        renumbered. Exact: a freed configuration is built again if a walk reaches it again. Hold
        :attr:`lock`, with no configuration in flight but ``roots`` (see :meth:`hold`)."""
        tabs = self._tabs
        counts = self._counts
        before = self.table_bytes
        nc = int(counts[fs.N_CONFIGS])
        n_nodes = int(counts[fs.N_NODES])
        keep = [self.start, *roots]
        for matcher in list(self._tracked):
            keep.extend(getattr(matcher, "_history", ()))
        ids = np.array(keep, dtype=np.int64)
        live_cfg = np.zeros(nc, dtype=np.bool_)
        live_cfg[ids[(ids >= 0) & (ids < nc)]] = True
        live_node = np.zeros(n_nodes, dtype=np.bool_)
        fs.mark_live(self.handle, live_cfg, live_node)
        new_node = np.cumsum(live_node, dtype=np.int64) - 1
        new_node[~live_node] = -1
        nn = int(live_node.sum())
        hw = int(np.flatnonzero(live_cfg)[-1]) + 1
        noff, foff = tabs[fs.NODE_OFF], tabs[fs.FRESH_OFF]
        node_need = int(np.diff(noff[: n_nodes + 1])[live_node].sum())
        fresh_need = int(np.diff(foff[: n_nodes + 1])[live_node].sum())
        coff = tabs[fs.CFG_OFF][: 2 * nc].reshape(nc, 2)
        cfg_need = int((coff[:, 1] - coff[:, 0])[live_cfg].sum())
        ne = int(counts[fs.N_ENDS])
        end_need = int(tabs[fs.END_OFF][ne])
        nt = self.num_terminals
        nlive = int(live_cfg.sum())
        rows = max(1024, nlive + nlive // 2 + 2)  # ``trans`` holds the live rows only (then doubles)
        id_cap = max(1024, 1 << (2 * hw + 2).bit_length())
        end_rows = max(256, 1 << (2 * ne + 2).bit_length())
        out = {
            fs.NODE_OFF: np.zeros(max(257, 2 * nn + 4), dtype=np.int64),
            fs.NODE_POOL: np.zeros(max(4096, 2 * node_need + 2), dtype=np.int64),
            fs.FRESH_OFF: np.zeros(max(257, 2 * nn + 4), dtype=np.int64),
            fs.FRESH_POOL: np.zeros(max(1024, 2 * fresh_need + nt), dtype=tabs[fs.FRESH_POOL].dtype),
            fs.END_OFF: np.zeros(end_rows + 1, dtype=np.int64),
            fs.END_POOL: np.zeros(max(1024, 2 * end_need + 2), dtype=np.int64),
            fs.END_NODE: np.zeros(end_rows, dtype=np.int64),
            fs.CFG_OFF: np.zeros(2 * id_cap + 2, dtype=np.int64),
            fs.CFG_POOL: np.zeros(max(16384, 2 * cfg_need + 2), dtype=np.int64),
            fs.CFG_ROW: np.zeros(id_cap, dtype=np.int64),
            fs.TRANS: np.full((rows, tabs[fs.TRANS].shape[1]), UNKNOWN, dtype=np.int32),
        }  # fmt: skip
        nn, ne, used = fs.compact(
            self.handle, live_cfg, new_node, out[fs.NODE_OFF], out[fs.NODE_POOL], out[fs.FRESH_OFF],
            out[fs.FRESH_POOL], out[fs.END_OFF], out[fs.END_POOL], out[fs.END_NODE], out[fs.CFG_OFF],
            out[fs.CFG_POOL], out[fs.CFG_ROW], out[fs.TRANS],
        )  # fmt: skip
        for i, arr in out.items():
            tabs[i] = arr
        trans = tabs[fs.TRANS]
        free = np.flatnonzero(~live_cfg[:hw])[::-1].astype(np.int64)  # popped from the end: lowest first
        tabs[fs.CFG_FREE] = free
        counts[fs.N_CONFIGS] = hw
        counts[fs.N_FREE] = free.shape[0]
        counts[fs.CFG_USED] = used
        counts[fs.N_NODES] = nn
        counts[fs.N_ENDS] = ne
        counts[fs.N_ROWS] = nlive
        for hash_i, off_i, pool_i, n, load, stride in (
            (fs.CFG_HASH, fs.CFG_OFF, fs.CFG_POOL, hw, nlive, 2),
            (fs.END_HASH, fs.END_OFF, fs.END_POOL, ne, ne, 1),
            (fs.NODE_HASH, fs.NODE_OFF, fs.NODE_POOL, nn, nn, 1),
        ):
            table = np.full(max(1024, 1 << (8 * (load + 2)).bit_length()), -1, dtype=np.int64)
            fs.rehash(table, tabs[off_i], tabs[pool_i], n, stride)
            tabs[hash_i] = table
        self.trans = trans
        self.tables = tuple(tabs)
        set_tables(self.handle, self.tables)
        # Python caches: by node (renumbered) cleared, by configuration pruned to the live ones.
        self._configs.clear()
        self._end_nodes.clear()
        self._finish.clear()
        watched = [c for caches in list(self._watched.values()) for c in caches]
        dropped = 0
        for cache in [self._final, *watched]:
            for c in list(cache):
                if c >= hw or not live_cfg[c]:
                    dropped += cache.pop(c, None) is not None
        self._collect_due = False
        self.table_bytes_cached = self.table_bytes
        self._budget = max(TABLE_BUDGET, 2 * self.table_bytes_cached)
        if before - self.table_bytes_cached > RELEASE_FLOOR or dropped > 1000:
            _trim_heap()  # the freed masks are small blocks the C heap would otherwise keep

    # ---- interning ---------------------------------------------------------------------------------
    def _fresh_lexemes(self, node: int) -> tuple[tuple[int, int], ...]:
        """(terminal, DFA start state) of every lexeme that may start at ``node`` (%ignore included)."""
        gterm = self._tabs[fs.GTERM]
        toff = self._toff
        out = []
        for row in self._fresh_rows(node).tolist():
            t = int(gterm[row])
            out.append((t, row - int(toff[t])))
        return tuple(out)

    def _fresh_rows(self, node: int) -> np.ndarray:
        off = self._tabs[fs.FRESH_OFF]
        return self._tabs[fs.FRESH_POOL][int(off[node]) : int(off[node + 1])]

    def node_final(self, node: int) -> bool:
        """True where the input may end at ``node`` (the start rule is complete there)."""
        return bool(self._tabs[fs.NODE_POOL][int(self._tabs[fs.NODE_OFF][node])] == 1)

    def end_node(self, ends_t: frozenset[tuple[int, int]], ends_ign: frozenset[int]) -> int:
        """The node after lexemes ``(start node, terminal)`` and %ignore lexemes (by start node) end
        at one position (built by :func:`constrain.cfg.fast_step.end_node` if new; cached)."""
        nt = self.num_terminals
        return self._end_node(sorted([m * nt + t for m, t in ends_t] + [-1 - m for m in ends_ign]))

    def _end_node(self, codes: list[int]) -> int:
        """:meth:`end_node` for a set of ends as the byte steps encode it (sorted, unique codes)."""
        key = tuple(codes)
        hit = self._end_nodes.get(key)
        if hit is not None:
            return hit
        arr = np.array(codes, dtype=np.int64)
        with self.lock:
            while (node := int(fs.end_node(self.handle, arr, arr.shape[0]))) == NEED_ROOM:
                self.grow()
        self._end_nodes[key] = node
        return node

    # ---- stepping ----------------------------------------------------------------------------------
    def resolve(self, c: int, b: int) -> int:
        """``trans[c, b]`` (in ``c``'s row), computing it first if needed (returns -1 for a dead byte)."""
        with self.lock:
            return self._resolve_locked(c, b)

    def resolve_row(self, c: int) -> np.ndarray:
        """Every transition of ``c`` built; returns its ``trans`` row."""
        with self.lock:
            while True:
                r = int(fs.step_row(self.handle, c))
                if r == 0:
                    return self.trans[int(self._tabs[fs.CFG_ROW][c])][self._tabs[fs.BYTE_CLASS]]
                self.grow()

    def _resolve_locked(self, c: int, b: int) -> int:
        while True:
            nxt = int(self.trans[int(self._tabs[fs.CFG_ROW][c]), int(self._tabs[fs.BYTE_CLASS][b])])
            if nxt != UNKNOWN:
                return nxt
            r = int(fs.step(self.handle, c, b))
            if r >= DEAD:
                return r
            self.grow()

    def walk(self, c: int, data: bytes) -> int:
        """The configuration after ``data`` from ``c`` (-1 when rejected). A collection that is due
        runs first (``c`` is kept): a walk holds the lock, so none frees its configurations midway."""
        with self.lock:
            if self._collect_due and not self._holds:
                self.collect((c,))
            trans, rows, byte_class = self.trans, self._tabs[fs.CFG_ROW], self._tabs[fs.BYTE_CLASS]
            for b in data:
                nxt = trans.item(rows.item(c), byte_class.item(b))  # .item: no numpy scalars
                if nxt == UNKNOWN:
                    nxt = self._resolve_locked(c, b)
                    trans, rows = self.trans, self._tabs[fs.CFG_ROW]
                if nxt < 0:
                    return DEAD
                c = nxt
            return c

    def fresh_config(self, node: int) -> int:
        """The configuration with only the fresh lexemes of ``node``
        (:func:`constrain.cfg.fast_step.fresh_config`)."""
        with self.lock:
            while (c := int(fs.fresh_config(self.handle, node))) == NEED_ROOM:
                self.grow()
        return c

    # ---- queries -----------------------------------------------------------------------------------
    def is_final(self, c: int) -> bool:
        """True where the input read so far is a sentence of the grammar (the end of the input ends
        every accepting lexeme; computed on first call by :func:`constrain.cfg.fast_step.config_final`,
        then cached)."""
        hit = self._final.get(c)
        if hit is None:
            with self.lock:
                while (r := int(fs.config_final(self.handle, c))) == NEED_ROOM:
                    self.grow()
            hit = self._final[c] = r == 1
        return hit

    def mask_facts(self, c: int, want_twin: bool) -> tuple[int, bool, np.ndarray]:
        """(fresh twin, finality, lexeme rows) of ``c`` in one numba call
        (:func:`constrain.cfg.fast_step.mask_facts`). With a fresh twin (a fresh configuration with the
        same transitions and finality, :func:`constrain.cfg.fast_step.fresh_twin`; only looked for with
        ``want_twin``) the rest is left empty; else the twin is -1 or ``c`` and the
        rows are the sorted global DFA rows of ``c``'s lexemes (see :meth:`row_lexeme`)."""
        off = self._tabs[fs.CFG_OFF]
        out = np.empty(3 + int(off[2 * c + 1] - off[2 * c]), dtype=np.int64)
        with self.lock:
            while fs.mask_facts(self.handle, c, want_twin, out) == NEED_ROOM:
                self.grow()
        twin = int(out[0])
        if twin >= 0 and twin != c:
            return twin, False, out[:0]
        return twin, bool(out[1]), out[3 : 3 + int(out[2])]

    def row_lexeme(self, row: int) -> tuple[int, int]:
        """(terminal, DFA state) of a global DFA row."""
        t = int(self._tabs[fs.GTERM][row])
        return t, row - int(self._toff[t])

    def future_class_of(self, term: int, state: int) -> int:
        """Class of lexeme state ``(term, state)``: equal exactly where two lexeme states accept the same
        continuations (so they keep and end lexemes on the same token bytes)."""
        return int(self.future_class[int(self._toff[term]) + state])

    def _config(self, c: int) -> _Config:
        """Configuration ``c`` decoded from the tables (cached)."""
        hit = self._configs.get(c)
        if hit is None:
            tabs = self._tabs
            off = tabs[fs.CFG_OFF]
            codes = tabs[fs.CFG_POOL][int(off[2 * c]) : int(off[2 * c + 1])].tolist()
            g = self._num_g
            gterm = tabs[fs.GTERM]
            toff = self._toff
            base = -2 - codes[0] if codes and codes[0] < 0 else -1
            lexemes = []
            for code in codes:
                if code >= 0:
                    m, row = divmod(code, g)
                    t = int(gterm[row])
                    lexemes.append((m, t, row - int(toff[t])))
            hit = self._configs.setdefault(c, _Config(base, tuple(lexemes)))
        return hit

    @property
    def num_configs(self) -> int:
        """How many configurations were built so far."""
        return int(self._counts[fs.N_CONFIGS])

    @property
    def num_nodes(self) -> int:
        """How many distinct Earley nodes were built so far."""
        return int(self._counts[fs.N_NODES])

    def accepts(self, data: bytes) -> bool:
        """True when ``data`` is a sentence (a convenience for tests)."""
        c = self.walk(self.start, data)
        return c >= 0 and self.is_final(c)

    # ---- shortest completion: a lower bound from the grammar (A* heuristic) -------------------------
    def completion_bound(self, c: int) -> int:
        """A lower bound on the bytes from configuration ``c`` to a sentence's end (:data:`NO_COMPLETION`
        where none exists): over ``c``'s lexemes, the lexeme's shortest way to an accepting DFA state
        plus the shortest yield of what its start node still waits for, up the chain of origins. The
        lexing rule and ``%ignore`` text only add bytes, so the bound never overestimates; for nested
        brackets it is exact (``[[[`` -> 3), which is what lets
        :meth:`constrain.GrammarMatcher.completion_bytes` find the completion of any nesting by A*
        instead of a breadth-first search."""
        if self.is_final(c):
            return 0
        dist, minlen, _ = self._static_bounds()
        tabs = self._tabs
        off = tabs[fs.CFG_OFF]
        codes = tabs[fs.CFG_POOL][int(off[2 * c]) : int(off[2 * c + 1])].tolist()
        g = self._num_g
        gterm = tabs[fs.GTERM]
        best = NO_COMPLETION
        for code in codes:
            if code < 0:
                continue
            m, row = divmod(code, g)
            d = int(dist[row])
            if d >= NO_COMPLETION:
                continue
            t = int(gterm[row])
            after = self._node_finish(m)
            if self._is_ignore[t]:
                rest = (
                    0
                    if self.node_final(m)
                    else min(
                        (int(minlen[x]) + v for x, v in after.items() if x < self.num_terminals),
                        default=NO_COMPLETION,
                    )
                )
            else:
                rest = after.get(t, NO_COMPLETION)
            best = min(best, d + rest)
        return best

    def _static_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shortest bytes to acceptance per global DFA row, shortest yield per symbol, shortest yield of
        the rest of each dotted rule), computed once per grammar (shared by :meth:`clone_empty` copies)."""
        hit = self._bounds
        if hit is not None:
            return hit
        tabs = self._tabs
        gtrans, gacc, gterm, toff = tabs[fs.GTRANS], tabs[fs.GACC], tabs[fs.GTERM], self._toff
        inf = NO_COMPLETION
        # Backward BFS over each terminal's DFA (targets are local to the terminal's rows).
        ng = gtrans.shape[0]
        dist = np.full(ng, inf, dtype=np.int64)
        preds: list[list[int]] = [[] for _ in range(ng)]
        for row in range(ng):
            base = int(toff[int(gterm[row])])
            for q2 in set(gtrans[row][gtrans[row] >= 0].tolist()):
                preds[base + q2].append(row)
        frontier = np.flatnonzero(gacc).tolist()
        dist[frontier] = 0
        while frontier:
            nxt = []
            for row in frontier:
                for p in preds[row]:
                    if dist[p] == inf:
                        dist[p] = dist[row] + 1
                        nxt.append(p)
            frontier = nxt
        nsym = len(self._nullable)
        nt = self.num_terminals
        minlen = np.full(nsym, inf, dtype=np.int64)
        for t, d in enumerate(self.dfas):
            minlen[t] = dist[int(toff[t]) + d.start]
        next_sym = self._next_sym
        starts = [dr for drs in self._first_dr.values() for dr in drs]
        changed = True
        while changed:  # shortest yield of each nonterminal: a fixed point over the rules
            changed = False
            for dr0 in starts:
                total = 0
                dr = dr0
                while next_sym[dr] >= 0 and total < inf:
                    total = min(inf, total + int(minlen[next_sym[dr]]))
                    dr += 1
                lhs = self._lhs[dr0]
                if lhs >= nt and total < minlen[lhs]:
                    minlen[lhs] = total
                    changed = True
        sufmin = np.zeros(len(next_sym), dtype=np.int64)
        for dr in range(len(next_sym) - 1, -1, -1):
            s = next_sym[dr]
            sufmin[dr] = 0 if s < 0 else min(inf, int(minlen[s]) + int(sufmin[dr + 1]))
        self._bounds = (dist, minlen, sufmin)
        return self._bounds

    def _node_finish(self, node: int) -> dict[int, int]:
        """For each symbol that ``node``'s items wait for: the fewest bytes from the end of that symbol
        (read from ``node``) to the end of a sentence (cached per node; origins first, iteratively)."""
        memo = self._finish
        hit = memo.get(node)
        if hit is not None:
            return hit
        _, _, sufmin = self._static_bounds()
        tabs = self._tabs
        noff, npool = tabs[fs.NODE_OFF], tabs[fs.NODE_POOL]
        ndr = len(self._next_sym)
        aug = len(self._nullable) - 1
        todo = [node]
        while todo:
            n = todo[-1]
            if n in memo:
                todo.pop()
                continue
            items = []
            missing = []
            for code in npool[int(noff[n]) + 1 : int(noff[n + 1])].tolist():
                dr, o = code % ndr, code // ndr
                origin = o - 1
                if origin >= 0 and origin not in memo:
                    missing.append(origin)
                items.append((self._next_sym[dr], int(sufmin[dr + 1]), self._lhs[dr], origin))
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            cost: dict[int, int] = {}
            changed = True
            while changed:  # SELF items complete into this node: a small fixed point
                changed = False
                for x, suf, lhs, origin in items:
                    if lhs == aug:
                        after = 0
                    else:
                        after = (cost if origin < 0 else memo[origin]).get(lhs, NO_COMPLETION)
                    total = suf + after
                    if total < cost.get(x, NO_COMPLETION):
                        cost[x] = total
                        changed = True
            memo[n] = cost
        return memo[node]


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing):
    after a collection freed many small blocks (masks, Python objects) the process would keep them."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _byte_classes(byte_class: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grammar's byte classes (bytes whose column in every terminal DFA is the same, numbered by
    :func:`constrain.automata.column_classes`) as (class of each byte, class offsets, bytes sorted by
    class)."""
    byte_class = byte_class.astype(np.int32)
    order = np.argsort(byte_class, kind="stable").astype(np.int32)
    offsets = np.zeros(int(byte_class.max()) + 2, dtype=np.int64)
    np.cumsum(np.bincount(byte_class), out=offsets[1:])
    return byte_class, offsets, order


def _grown(arr: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


def _productive_rules(cfg: CFG, term_ok: list[bool]) -> list[tuple[int, tuple[int, ...]]]:
    nt = cfg.num_terminals
    productive = {i for i in range(nt) if term_ok[i]}
    changed = True
    while changed:
        changed = False
        for lhs, rhs in cfg.rules:
            if lhs not in productive and all(s in productive for s in rhs):
                productive.add(lhs)
                changed = True
    return [(lhs, rhs) for lhs, rhs in cfg.rules if lhs in productive and all(s in productive for s in rhs)]


def _nullable(rules: list[tuple[int, tuple[int, ...]]], num_symbols: int) -> list[bool]:
    nullable = [False] * num_symbols
    changed = True
    while changed:
        changed = False
        for lhs, rhs in rules:
            if not nullable[lhs] and all(nullable[s] for s in rhs):
                nullable[lhs] = True
                changed = True
    return nullable


def build_automaton(cfg: CFG) -> EarleyAutomaton:
    """Compile every terminal to a DFA and set up the lazy configuration automaton."""
    dfas = []
    for term in cfg.terminals:
        try:
            dfa = regex_to_dfa(term.regex)
        except UnsupportedRegexFeature as exc:
            raise UnsupportedFeatureError(f"terminal {term.name}: {exc}") from exc
        if dfa.accepting[dfa.start]:
            raise GrammarError(f"terminal {term.name} matches the empty string")
        dfas.append(dfa)
    return EarleyAutomaton(cfg, tuple(dfas))
