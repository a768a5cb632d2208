"""A scannerless Earley recogniser over bytes, determinised lazily into an automaton of configurations.

Method: Earley over terminals, with each terminal recognised by its own byte DFA
(:func:`constrain.regex.regex_to_dfa`). We chose Earley because Lark grammars may be ambiguous or
outside LALR(1) (Lark's own default parser is Earley), and a constraint engine must accept every
string of the language, not only those one LR table can parse. We chose a *scannerless* lexer (every
terminal may end anywhere its regex allows, not only at the longest match) because that is what lets
us accept every way to split the output into terminals: the language is exactly Lark's
``parser="earley", lexer="dynamic_complete"`` language, a superset of what Lark's standard and
contextual lexers accept (their longest-match lexing is one of the splits we allow). Terminal
priorities only choose between parse trees in Lark; they do not change which strings are accepted,
so they are ignored here. ``%ignore`` terminals may appear before, between and after terminals.

Why it is fast enough: Earley sets are hash-consed into *nodes*. A node holds the items waiting at
one position, each item pointing at the node where it started (its origin) rather than at a
position, so two positions with the same pending items and the same origins up the chain are the
same node and have the same future. A *configuration* is the node at the current position (if a
terminal may have just ended) plus the lexemes in progress ``(start node, terminal, DFA state)``.
Configurations are interned too, so the recogniser is a deterministic automaton over
configurations, built lazily: ``trans[c, byte]`` is ``-2`` until first needed, then the next
configuration or ``-1``. Inside a JSON string the configuration repeats byte after byte, so a
string is a self-loop, and the k-th element of a list reaches the same nodes as the third
(Lark expands ``x*`` with left recursion). Rollback and fork are a list of configuration ids.

Nullable symbols use Aycock and Horspool's fix (predicting a nullable symbol also steps over it).
Unproductive rules are dropped first, so every item in a node can still complete; hence every
configuration we create can be extended to a full sentence, which the token masks rely on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from ..exceptions import GrammarError, UnsupportedFeatureError, UnsupportedRegexFeature
from ..regex import DFA, regex_to_dfa
from .lark_frontend import CFG

UNKNOWN = -2  # trans[c, b] not computed yet
DEAD = -1
SELF = -1  # item origin: the node that holds the item

Item = tuple[int, int]  # (dotted rule, origin node or SELF)
Lexeme = tuple[int, int, int]  # (start node, terminal, DFA state)


@dataclass(eq=False)
class _Node:
    """An interned Earley set: the items still waiting for a symbol, and whether the input may end."""

    items: tuple[Item, ...]
    final: bool
    expect_t: dict[int, list[Item]]  # terminal -> items advanced past it, origins resolved
    expect_nt: dict[int, list[Item]]  # nonterminal -> items advanced past it, origins resolved
    resolved: list[Item]  # the items with SELF replaced by this node (for %ignore)


@dataclass(eq=False)
class _Config:
    node: int  # -1: no terminal may end here
    lexemes: tuple[Lexeme, ...]  # in progress, including fresh ones starting at ``node``
    lexset: frozenset[tuple[int, int]]  # {(terminal, DFA state)}: all the token masks depend on
    final: bool


@dataclass(eq=False)
class EarleyAutomaton:
    """The lazily built automaton of Earley configurations of one grammar (shared across tokenizers).

    Thread-safe: lookups read ``trans`` without a lock; building new configurations takes one.
    """

    cfg: CFG
    dfas: tuple[DFA, ...]
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        cfg = self.cfg
        nt = cfg.num_terminals
        self.num_terminals = nt
        self.ignore = tuple(i for i, t in enumerate(cfg.terminals) if t.ignore)
        self._is_ignore = [t.ignore for t in cfg.terminals]
        self._dfa_trans = [d.transitions for d in self.dfas]
        self._dfa_acc = [d.accepting for d in self.dfas]
        self._dfa_start = [d.start for d in self.dfas]
        self._alive_rows = [d.transitions >= 0 for d in self.dfas]
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
        self._accept_dr = 1  # S' -> start .
        self._nodes: list[_Node] = []
        self._node_ids: dict[tuple[frozenset[Item], bool], int] = {}
        self._configs: list[_Config] = []
        self._config_ids: dict[tuple[int, frozenset[Lexeme]], int] = {}
        self._lexset_rows: dict[frozenset[tuple[int, int]], tuple[np.ndarray, np.ndarray]] = {}
        self.trans = np.full((64, 256), UNKNOWN, dtype=np.int32)
        root = self._close([(0, SELF)], False)
        if root < 0:  # pragma: no cover - the start rule is productive
            raise GrammarError("the grammar generates no string")
        self.start = self._config(root, set())

    # ---- interning ---------------------------------------------------------------------------------
    def _close(self, seeds: list[Item], final: bool) -> int:
        """Earley closure (predict + complete) of ``seeds`` at a new position; returns the node id."""
        next_sym = self._next_sym
        nt = self.num_terminals
        nodes = self._nodes
        seen: set[Item] = set()
        predicted: set[int] = set()
        agenda = list(seeds)
        while agenda:
            it = agenda.pop()
            if it in seen:
                continue
            seen.add(it)
            dr, origin = it
            sym = next_sym[dr]
            if sym < 0:
                if dr == self._accept_dr:
                    final = True
                elif origin != SELF:  # SELF completions are covered by the nullable step-over
                    agenda.extend(nodes[origin].expect_nt.get(self._lhs[dr], ()))
            elif sym >= nt:
                if sym not in predicted:
                    predicted.add(sym)
                    agenda.extend((d, SELF) for d in self._first_dr.get(sym, ()))
                if self._nullable[sym]:
                    agenda.append((dr + 1, origin))
        pending = frozenset(it for it in seen if next_sym[it[0]] >= 0)
        if not pending and not final:  # pragma: no cover - cannot happen in a productive grammar
            return -1
        key = (pending, final)
        nid = self._node_ids.get(key)
        if nid is not None:
            return nid
        nid = len(nodes)
        expect_t: dict[int, list[Item]] = {}
        expect_nt: dict[int, list[Item]] = {}
        resolved: list[Item] = []
        for dr, origin in sorted(pending):
            o = nid if origin == SELF else origin
            sym = next_sym[dr]
            (expect_t if sym < nt else expect_nt).setdefault(sym, []).append((dr + 1, o))
            resolved.append((dr, o))
        nodes.append(_Node(tuple(sorted(pending)), final, expect_t, expect_nt, resolved))
        self._node_ids[key] = nid
        return nid

    def _config(self, node: int, lexemes: set[Lexeme]) -> int:
        """Intern the configuration (node, lexemes in progress); fresh lexemes start at ``node``."""
        if node >= 0:
            starts = self._dfa_start
            for t in self._nodes[node].expect_t:
                lexemes.add((node, t, starts[t]))
            for t in self.ignore:
                lexemes.add((node, t, starts[t]))
        key = (node, frozenset(lexemes))
        cid = self._config_ids.get(key)
        if cid is not None:
            return cid
        cid = len(self._configs)
        lex = tuple(lexemes)
        lexset = frozenset((t, q) for _, t, q in lex)
        final = node >= 0 and self._nodes[node].final
        self._configs.append(_Config(node, lex, lexset, final))
        if cid >= self.trans.shape[0]:
            grown = np.full((2 * self.trans.shape[0], 256), UNKNOWN, dtype=np.int32)
            grown[:cid] = self.trans[:cid]
            self.trans = grown
        # Bytes that no lexeme survives are dead now; only the rest need the parser (lazily).
        self.trans[cid] = self._lexset_row(lexset)[0]
        self._config_ids[key] = cid
        return cid

    def _lexset_row(self, lexset: frozenset[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """(initial trans row, byte classes) of a set of lexeme states, cached: many configurations
        share one lexeme set and differ only in where the lexemes started."""
        hit = self._lexset_rows.get(lexset)
        if hit is None:
            pairs = sorted(lexset)
            nxt = np.empty((256, max(1, len(pairs))), dtype=np.int32)
            nxt[:, 0] = -1
            for k, (t, q) in enumerate(pairs):
                nxt[:, k] = self._dfa_trans[t][q]
            alive = (nxt >= 0).any(axis=1)
            keys = np.ascontiguousarray(nxt).view(np.dtype((np.void, 4 * nxt.shape[1]))).ravel()
            _, classes = np.unique(keys, return_inverse=True)
            hit = (np.where(alive, UNKNOWN, DEAD).astype(np.int32), classes.ravel())
            self._lexset_rows[lexset] = hit
        return hit

    # ---- stepping ----------------------------------------------------------------------------------
    def resolve(self, c: int, b: int) -> int:
        """``trans[c, b]``, computing it first if needed (returns -1 for a dead byte).

        Every byte that moves each lexeme of ``c`` to the same DFA state as ``b`` does (``b``'s byte
        class here) gets the same answer, so it is filled in at the same time.
        """
        nxt = int(self.trans[c, b])
        if nxt != UNKNOWN:
            return nxt
        with self._lock:
            if int(self.trans[c, b]) != UNKNOWN:
                return int(self.trans[c, b])
            lexemes = self._configs[c].lexemes
            rows = self._dfa_trans
            states = [int(rows[t][q, b]) for _, t, q in lexemes]
            classes = self._lexset_row(self._configs[c].lexset)[1]
            same = classes == classes[b]
            target = self._step(c, states)
            self.trans[c, same] = target  # after _step, which may have grown the table
            return target

    def _step(self, c: int, states: list[int]) -> int:
        """The configuration after a byte that takes lexeme ``k`` of ``c`` to DFA state ``states[k]``."""
        lex_out: set[Lexeme] = set()
        done_t: set[tuple[int, int]] = set()
        done_ign: set[int] = set()
        dfa_acc = self._dfa_acc
        is_ignore = self._is_ignore
        for (m, t, _), q2 in zip(self._configs[c].lexemes, states):
            if q2 < 0:
                continue
            lex_out.add((m, t, q2))
            if dfa_acc[t][q2]:
                if is_ignore[t]:
                    done_ign.add(m)
                else:
                    done_t.add((m, t))
        if not lex_out:
            return DEAD
        node = -1
        if done_t or done_ign:
            if not done_t and len(done_ign) == 1:
                # Skipped text: the position behaves exactly like the one the ignored lexeme began at.
                node = next(iter(done_ign))
            else:
                nodes = self._nodes
                seeds: list[Item] = []
                final = False
                for m, t in done_t:
                    seeds.extend(nodes[m].expect_t[t])
                for m in done_ign:
                    seeds.extend(nodes[m].resolved)
                    final = final or nodes[m].final
                node = self._close(seeds, final)
        return self._config(node, lex_out)

    def walk(self, c: int, data: bytes) -> int:
        """The configuration after ``data`` from ``c`` (-1 when rejected)."""
        trans = self.trans
        for b in data:
            nxt = int(trans[c, b])
            if nxt == UNKNOWN:
                nxt = self.resolve(c, b)
                trans = self.trans
            if nxt < 0:
                return DEAD
            c = nxt
        return c

    # ---- queries -----------------------------------------------------------------------------------
    def is_final(self, c: int) -> bool:
        """True where the input read so far is a sentence of the grammar."""
        return self._configs[c].final

    def lexset(self, c: int) -> frozenset[tuple[int, int]]:
        """The (terminal, DFA state) pairs of the lexemes in progress at ``c`` (fresh ones included)."""
        return self._configs[c].lexset

    @property
    def num_configs(self) -> int:
        """How many configurations were built so far."""
        return len(self._configs)

    @property
    def num_nodes(self) -> int:
        """How many distinct Earley nodes were built so far."""
        return len(self._nodes)

    def accepts(self, data: bytes) -> bool:
        """True when ``data`` is a sentence (a convenience for tests)."""
        c = self.walk(self.start, data)
        return c >= 0 and self.is_final(c)


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
