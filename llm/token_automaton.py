"""Constrained decoding: the answer's regex (dates fixed, numbers free) as a token automaton for the model.

outlines-core (the Rust engine of Outlines) compiles a regex against the tokenizer's vocabulary into an
index: for every state, the tokens allowed next and the state each leads to. We flatten that index into
two small tables (state × allowed-token slot), so that masking a whole batch is two gathers and a
scatter on the GPU per generated token, with no Python per sequence. Why outlines-core and not
xgrammar or lm-format-enforcer: see `benchmarks/constrained_speed.py` and docs/forecasting.md.

No torch here: the tables are numpy arrays; `model.py` moves them to the device.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from utils import StockToolError

log = logging.getLogger("stock.constrained")


@dataclass(frozen=True)
class TokenAutomaton:
    """A regex over tokens. Row s of `tokens` lists the tokens allowed in state s (padded by repeating an
    allowed one, so a padded slot leads where that token does), `next` the state each leads to. Final
    states allow end-of-sequence, which leads to `done`, a state that allows only end-of-sequence (what a
    finished row keeps producing while others go on)."""

    tokens: np.ndarray  # states × width, int64
    next: np.ndarray  # states × width, int64
    initial: int

    @property
    def states(self) -> int:
        return len(self.tokens)


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2, Llama 3, SmolLM2): printable stand-in character → byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            stand_ins[chr(byte)] = byte
        else:
            stand_ins[chr(256 + extra)] = byte
            extra += 1
    return stand_ins


def token_bytes(tokenizer) -> dict[bytes, list[int]]:
    """Every ordinary token's text as bytes → its ids (special tokens left out: a grammar never writes them)."""
    decoder = _byte_decoder()
    special = set(tokenizer.all_special_ids)
    table: dict[bytes, list[int]] = {}
    for token, token_id in tokenizer.get_vocab().items():
        if token_id in special:
            continue
        if all(ch in decoder for ch in token):
            text = bytes(decoder[ch] for ch in token)
        else:  # a SentencePiece-style vocabulary ("▁" for a space)
            text = tokenizer.convert_tokens_to_string([token]).encode("utf-8")
        table.setdefault(text, []).append(token_id)
    return table


class Grammars:
    """Compiles answer regexes for one tokenizer, once each (evaluation windows of one origin share dates).
    `canonical` (the default): the fixed text is spelled in the tokenizer's own tokens (`canonical`)."""

    def __init__(self, tokenizer):
        try:
            from outlines_core import Vocabulary
        except ImportError as exc:  # pragma: no cover - it is in requirements.txt
            raise StockToolError("constrained decoding needs outlines-core: pip install outlines-core") from exc
        if tokenizer.eos_token_id is None:
            raise StockToolError("the tokenizer has no end-of-sequence token: constrained decoding cannot stop")
        self.eos = int(tokenizer.eos_token_id)
        table = token_bytes(tokenizer)
        self.vocabulary = Vocabulary(self.eos, table)
        self.text = {i: text for text, ids in table.items() for i in ids}
        self.tokenizer = tokenizer
        self._compiled: dict[tuple[str, bool], TokenAutomaton] = {}

    def compile(self, regex: str, canonical: bool = True) -> TokenAutomaton:
        key = (regex, canonical)
        if key not in self._compiled:
            plain = self._compiled.get((regex, False)) or automaton(regex, self.vocabulary, self.eos)
            self._compiled[(regex, False)] = plain
            if canonical:
                self._compiled[key] = canonical_automaton(plain, self.text, self._tokenize, self.eos)
        return self._compiled[key]

    def _tokenize(self, text: bytes) -> list[int]:
        return self.tokenizer(text.decode("utf-8"), add_special_tokens=False)["input_ids"]


def automaton(regex: str, vocabulary, eos: int) -> TokenAutomaton:
    """outlines-core's index of `regex`, flattened into tables with contiguous state numbers."""
    from outlines_core import Index

    index = Index(regex, vocabulary)
    transitions = index.get_transitions()  # state → {token: next state}
    finals = set(index.get_final_states())
    order = {state: i for i, state in enumerate(sorted(set(transitions) | finals))}
    done = len(order)
    rows: list[list[tuple[int, int]]] = [[] for _ in range(done + 1)]
    for state, moves in transitions.items():
        rows[order[state]] = [(token, order[target]) for token, target in moves.items() if token != eos]
    for state in finals:
        rows[order[state]].append((eos, done))
    rows[done] = [(eos, done)]
    if any(not row for row in rows):
        raise StockToolError(f"the answer grammar has a dead end for this tokenizer: {regex[:80]!r}")
    width = max(len(row) for row in rows)
    tokens = np.array([[t for t, _ in row] + [row[0][0]] * (width - len(row)) for row in rows], dtype=np.int64)
    nexts = np.array([[n for _, n in row] + [row[0][1]] * (width - len(row)) for row in rows], dtype=np.int64)
    return TokenAutomaton(tokens, nexts, order[index.get_initial_state()])


def stack(automata: list[TokenAutomaton]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One table for a batch whose rows follow different automata: (tokens, next, initial state per row).
    Identical automata (the same object) are stored once."""
    unique: dict[int, int] = {}
    parts: list[TokenAutomaton] = []
    for a in automata:
        if id(a) not in unique:
            unique[id(a)] = len(parts)
            parts.append(a)
    width = max(a.tokens.shape[1] for a in parts)
    offsets = np.cumsum([0] + [a.states for a in parts])
    tokens, nexts = [], []
    for a, offset in zip(parts, offsets, strict=False):
        pad = width - a.tokens.shape[1]
        tokens.append(np.pad(a.tokens, ((0, 0), (0, pad)), mode="edge"))
        nexts.append(np.pad(a.next + offset, ((0, 0), (0, pad)), mode="edge"))
    initial = np.array([offsets[unique[id(a)]] + a.initial for a in automata], dtype=np.int64)
    return np.concatenate(tokens), np.concatenate(nexts), initial


def longest_answer(a: TokenAutomaton) -> int:
    """The most tokens any complete answer can take (end-of-sequence included): a token budget that can never
    cut an answer short. The language is finite, so apart from `done`'s own loop the automaton has no cycle."""
    done = a.states - 1
    memo: dict[int, int] = {done: 0}
    stack = [a.initial]
    while stack:  # iterative depth-first longest path (answers run to hundreds of states)
        state = stack[-1]
        pending = [int(n) for n in set(a.next[state].tolist()) if int(n) not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        memo[state] = 1 + max(memo[int(n)] for n in a.next[state])
    return memo[a.initial]


def walk(a: TokenAutomaton, token_ids: list[int]) -> int | None:
    """The state after `token_ids` from the start, or None where a token is not allowed (tests, checks)."""
    state = a.initial
    for token in token_ids:
        (slots,) = np.nonzero(a.tokens[state] == token)
        if not len(slots):
            return None
        state = int(a.next[state, slots[0]])
    return state


def accepts(a: TokenAutomaton, token_ids: list[int], eos: int) -> bool:
    """True when `token_ids` is a complete answer: end-of-sequence is allowed after it."""
    state = walk(a, token_ids)
    return state is not None and eos in a.tokens[state]


# --------------------------------------------------------------------------- jump-forward decoding


@dataclass(frozen=True)
class ForcedRuns:
    """Where the grammar leaves the model no choice, per state of an automaton's table (one or stacked).

    A state is forced when it allows exactly one token and that token is not end-of-sequence: the masked
    greedy choice and every sample are that token, so it can be appended without asking the model (and several
    in a row fed in one forward). `tokens[s, :length[s]]` are the forced tokens from state s on, `end[s]` the
    state they lead to (s itself when s is not forced); `complete[s]`: s allows only end-of-sequence."""

    length: np.ndarray  # states, int64
    end: np.ndarray  # states, int64
    tokens: np.ndarray  # states × longest run (at least 1), int64, padded with end-of-sequence
    complete: np.ndarray  # states, bool


def forced_tokens(tokens: np.ndarray, eos: int) -> np.ndarray:
    """Per state of a table, the one token it allows when that is its only one and not end-of-sequence, else -1.
    (Padded slots repeat an allowed token, so a single allowed token fills its whole row.)"""
    single = (tokens == tokens[:, :1]).all(axis=1) & (tokens[:, 0] != eos)
    return np.where(single, tokens[:, 0], -1)


def forced_runs(tokens: np.ndarray, nexts: np.ndarray, eos: int) -> ForcedRuns:
    """The forced runs of every state of a table (`TokenAutomaton.tokens`/`.next`, or `stack`'s), computed for
    all states at once, one token of every run per pass (runs are a few tokens long: a date, a label's colon)."""
    forced = forced_tokens(tokens, eos)
    states = len(tokens)
    current = np.arange(states, dtype=np.int64)
    length = np.zeros(states, dtype=np.int64)
    columns: list[np.ndarray] = []
    while True:
        step = forced[current]
        moving = step >= 0
        if not moving.any():
            break
        if len(columns) > states:  # pragma: no cover - a finite language has no cycle of forced tokens
            raise StockToolError("the answer grammar forces an endless run of tokens")
        columns.append(np.where(moving, step, eos))
        length += moving
        current = np.where(moving, nexts[current, 0], current)
    run = np.stack(columns, axis=1) if columns else np.full((states, 1), eos, dtype=np.int64)
    complete = (tokens == eos).all(axis=1)
    return ForcedRuns(length, current, run.astype(np.int64), complete)


def forced_run(a: TokenAutomaton, state: int, eos: int) -> list[int]:
    """The tokens the grammar forces from `state` on (tests, token counts)."""
    runs = forced_runs(a.tokens, a.next, eos)
    return runs.tokens[state, : runs.length[state]].tolist()


# --------------------------------------------------------------------------- canonical spelling of the fixed text

CANONICAL_SAMPLES = 12  # random answers whose own tokenization shows how the tokenizer spells the fixed text


def _postorder(a: TokenAutomaton) -> list[int]:
    """Every state reachable from the start, each after all the states it leads to (`done` first)."""
    order, seen, stack = [], set(), [(a.initial, False)]
    while stack:
        state, expanded = stack.pop()
        if expanded:
            order.append(state)
            continue
        if state in seen:
            continue
        seen.add(state)
        stack.append((state, True))
        stack.extend((int(n), False) for n in set(a.next[state].tolist()) if int(n) not in seen)
    return order


def common_prefixes(a: TokenAutomaton, text: dict[int, bytes], eos: int) -> dict[int, bytes]:
    """Per reachable state, the bytes that every answer from it starts with: b"" where the next character is a
    choice (a digit, a sign) or the answer may end; the rest of a label (b"%, High: ") inside fixed text."""
    done = a.states - 1
    common: dict[int, bytes] = {done: b""}
    for state in _postorder(a):
        if state == done:
            continue
        options = []
        for token, target in set(zip(a.tokens[state].tolist(), a.next[state].tolist(), strict=True)):
            options.append(b"" if token == eos else text.get(token, b"") + common[int(target)])
        prefix = options[0]
        for option in options[1:]:
            n = 0
            while n < min(len(prefix), len(option)) and prefix[n] == option[n]:
                n += 1
            prefix = prefix[:n]
        common[state] = prefix
    return common


def random_answers(a: TokenAutomaton, text: dict[int, bytes], eos: int, count: int, seed: int = 0) -> list[bytes]:
    """`count` answers the automaton accepts, drawn by random walks (any spelling, numbers of any length)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        state, parts = a.initial, []
        while True:
            choices = sorted(set(a.tokens[state].tolist()))
            ends = eos in choices
            words = [t for t in choices if t != eos]
            if not words or (ends and rng.random() < 0.5):
                break
            token = words[int(rng.integers(len(words)))]
            parts.append(text.get(token, b""))
            state = int(a.next[state, list(a.tokens[state]).index(token)])
        out.append(b"".join(parts))
    return out


def canonical_automaton(a: TokenAutomaton, text: dict[int, bytes], tokenize, eos: int) -> TokenAutomaton:
    """`a` with the fixed text spelled only as the tokenizer spells it.

    The regex's index allows every spelling of a label (" Open", or " O" + "pen", ...), so a label costs the model
    a choice, a decode step, at each split. A model only ever saw the tokenizer's own spelling in training (and
    the untuned SmolLM2 chose it in every greedy answer measured). So: tokenize a few random answers of the
    grammar with the tokenizer, walk them through the automaton, and where a state lies inside fixed text (its
    common prefix is longer than a token it allows), keep only the tokens the tokenizer used there. The text
    the grammar accepts is the same; a label becomes a run of forced tokens, appended without a decode step.
    Tokens that reach past the fixed text into a choice (" +" and " -" after a colon) are always kept, so no
    number or sign is lost, and a state no walk reached is left as it was."""
    common = common_prefixes(a, text, eos)
    used: dict[int, set[int]] = {}
    for answer in random_answers(a, text, eos, CANONICAL_SAMPLES):
        state, seen = a.initial, []
        for token in tokenize(answer):
            (slots,) = np.nonzero(a.tokens[state] == token)
            if not len(slots):
                seen = []  # not an answer of this automaton's spelling: teaches nothing
                break
            seen.append((state, token))
            state = int(a.next[state, slots[0]])
        for state, token in seen:
            used.setdefault(state, set()).add(token)
    rows = []
    for state in range(a.states):
        pairs = list(dict.fromkeys(zip(a.tokens[state].tolist(), a.next[state].tolist(), strict=True)))
        inside = {t for t, _ in pairs if t != eos and len(text.get(t, b"")) <= len(common.get(state, b""))}
        spelled = used.get(state, set()) & inside
        if spelled:
            pairs = [(t, n) for t, n in pairs if t not in inside or t in spelled]
        rows.append(pairs)
    width = max(len(row) for row in rows)
    tokens = np.array([[t for t, _ in row] + [row[0][0]] * (width - len(row)) for row in rows], dtype=np.int64)
    nexts = np.array([[n for _, n in row] + [row[0][1]] * (width - len(row)) for row in rows], dtype=np.int64)
    return TokenAutomaton(tokens, nexts, a.initial)
