"""A toy language whose truth we know: a probabilistic finite-state grammar of short sentences.

    the small dog helps a red cat quietly and a bird sleeps <eos>

A sentence is one or two clauses, SUBJECT VERB [OBJECT] [ADVERB], joined by "and" / "but". Each
noun phrase is DET [SIZE] [COLOUR] NOUN. The grammar is a deterministic probabilistic automaton:
from each state every token has one probability and leads to one next state, so a sentence is
one path and its probability is the product along it. That gives, exactly:

    log P(y) = sum_t log P(y_t | q_t),  q_{t+1} = next(q_t, y_t)                     (RLHF.1)
    H per token = sum_q visits(q) H(q) / sum_q visits(q)                            (RLHF.2)

where visits = e_start (I - M)^{-1} are the expected visits of each state per sentence (M the
state-to-state transition matrix) and H(q) the entropy of the token emitted from q. A model that
sees only the last k tokens can do no better than the k-context floor (RLHF.3), computed by
pushing probability through (state, last k tokens) pairs.

The gold reward (a hidden rater, RLHF.4) is defined here too; the reward model never sees it,
only preference labels drawn from it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

BOS, EOS = 0, 1
WORDS = {
    "det": ["the", "a"],
    "size": ["small", "big"],
    "colour": ["red", "black", "white"],
    "noun": ["cat", "dog", "bird", "fox", "robot", "child"],
    "verb_i": ["sleeps", "runs", "sings"],
    "verb_t": ["sees", "chases", "likes", "helps"],
    "adverb": ["quietly", "quickly", "today"],
    "conj": ["and", "but"],
}
VOCAB = ["<bos>", "<eos>"] + [w for ws in WORDS.values() for w in ws]
TOKEN = {w: i for i, w in enumerate(VOCAB)}
V = len(VOCAB)


def _np_states(slot: str, after: str) -> dict[str, dict[str, tuple[float, str]]]:
    """DET [SIZE] [COLOUR] NOUN, then `after`: four states of one noun-phrase slot."""
    nouns = dict(cat=0.25, dog=0.25, bird=0.15, fox=0.1, robot=0.1, child=0.15)
    if slot.startswith("O"):  # objects: more robots and children
        nouns = dict(cat=0.2, dog=0.2, bird=0.15, fox=0.1, robot=0.15, child=0.2)
    noun_to = {w: (p, after) for w, p in nouns.items()}
    return {
        f"{slot}.det": {"the": (0.6, f"{slot}.adj"), "a": (0.4, f"{slot}.adj")},
        f"{slot}.adj": {"small": (0.15, f"{slot}.size"), "big": (0.15, f"{slot}.size"),
                        "red": (0.1, f"{slot}.noun"), "black": (0.1, f"{slot}.noun"),
                        "white": (0.05, f"{slot}.noun")}
        | {w: (0.45 * p, to) for w, (p, to) in noun_to.items()},
        f"{slot}.size": {"red": (0.2, f"{slot}.noun"), "black": (0.1, f"{slot}.noun"),
                         "white": (0.1, f"{slot}.noun")}
        | {w: (0.6 * p, to) for w, (p, to) in noun_to.items()},
        f"{slot}.noun": noun_to,
    }


def _clause_states(j: int) -> dict[str, dict[str, tuple[float, str]]]:
    """Clause j (1 or 2): SUBJ VERB [OBJ] [ADV], then a conjunction (clause 1 only) or <eos>."""
    ends = ({"and": (0.15, "S2.det"), "but": (0.1, "S2.det"), "<eos>": (0.45, "stop")}
            if j == 1 else {"<eos>": (0.7, "stop")})
    after_adv = ({"and": (0.2, "S2.det"), "but": (0.1, "S2.det"), "<eos>": (0.7, "stop")}
                 if j == 1 else {"<eos>": (1.0, "stop")})
    return (
        _np_states(f"S{j}", f"V{j}")
        | _np_states(f"O{j}", f"A{j}")
        | {
            f"V{j}": {"sleeps": (0.15, f"A{j}"), "runs": (0.15, f"A{j}"), "sings": (0.1, f"A{j}"),
                      "sees": (0.2, f"O{j}.det"), "chases": (0.15, f"O{j}.det"),
                      "likes": (0.15, f"O{j}.det"), "helps": (0.1, f"O{j}.det")},
            f"A{j}": {"quietly": (0.1, f"E{j}"), "quickly": (0.1, f"E{j}"),
                      "today": (0.1, f"E{j}")} | ends,
            f"E{j}": after_adv,
        }
    )


class Grammar:
    """The automaton as two dense tables over (state, token): P (probabilities) and NEXT (the
    state reached; -1 where P = 0). State 0 is the start; reaching `stop` ends the sentence."""

    def __init__(self):
        rules = _clause_states(1) | _clause_states(2)
        self.states = ["S1.det"] + [s for s in rules if s != "S1.det"]
        index = {s: i for i, s in enumerate(self.states)} | {"stop": -2}
        S = len(self.states)
        self.P = np.zeros((S, V))
        self.NEXT = np.full((S, V), -1, np.int64)
        for s, emits in rules.items():
            for word, (p, to) in emits.items():
                self.P[index[s], TOKEN[word]] = p
                self.NEXT[index[s], TOKEN[word]] = index[to]
        assert np.allclose(self.P.sum(axis=1), 1.0), "every state's probabilities sum to 1"
        self.max_len = 22  # two clauses of <= 10 tokens, a conjunction, <eos>

    # ---- sampling and scoring -----------------------------------------------------------

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n sentences as an (n, max_len) token array, padded with <eos> after the first one."""
        out = np.full((n, self.max_len), EOS, np.int64)
        state = np.zeros(n, np.int64)
        alive = np.ones(n, bool)
        cdf = np.cumsum(self.P, axis=1)
        for t in range(self.max_len):
            u = rng.random(n)
            tok = (cdf[state] <= u[:, None]).sum(axis=1)  # inverse CDF, one uniform per row
            tok = np.minimum(tok, V - 1)
            out[alive, t] = tok[alive]
            nxt = self.NEXT[state, tok]
            alive &= nxt >= 0
            state = np.where(alive, nxt, 0)
            if not alive.any():
                break
        assert not alive.any(), "a sentence outran max_len"
        return out

    def log_prob(self, tokens: np.ndarray) -> np.ndarray:
        """log P(y) of each row (RLHF.1): -inf for a sentence outside the language. A row is read
        up to its first <eos>; a row with no <eos> is unfinished, so outside the language."""
        logp = np.zeros(len(tokens))
        for i, row in enumerate(tokens):
            q = 0
            for tok in row:
                p = self.P[q, tok]
                if p == 0.0:
                    logp[i] = -np.inf
                    break
                logp[i] += np.log(p)
                q = self.NEXT[q, tok]
                if q == -2:
                    break
            else:
                logp[i] = -np.inf
        return logp

    # ---- exact quantities -----------------------------------------------------------------

    def visits(self) -> np.ndarray:
        """Expected visits of each state per sentence: e_start (I - M)^{-1}   (RLHF.2)."""
        S = len(self.states)
        M = np.zeros((S, S))
        for q in range(S):
            for tok in np.flatnonzero(self.P[q]):
                if self.NEXT[q, tok] >= 0:
                    M[q, self.NEXT[q, tok]] += self.P[q, tok]
        start = np.zeros(S)
        start[0] = 1.0
        return np.linalg.solve((np.eye(S) - M).T, start)

    def state_entropy(self) -> np.ndarray:
        """H(q) = -sum_w P(w|q) log P(w|q) of each state's next token."""
        P = self.P
        return -np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0).sum(axis=1)

    def entropy_per_token(self) -> float:
        """The true entropy rate in nats per token, <eos> counted as a token  (RLHF.2).

        One sentence emits one token per visit, so the expected length is sum(visits), and
        because the automaton is deterministic its sentence entropy is sum_q visits(q) H(q)."""
        v = self.visits()
        return float(v @ self.state_entropy() / v.sum())

    def mean_length(self) -> float:
        """Expected tokens per sentence, <eos> included."""
        return float(self.visits().sum())

    def context_floor(self, k: int) -> float:
        """The lowest cross-entropy per token any model reading only the last k tokens (BOS-padded)
        can reach  (RLHF.3): sum_w n(w) H(next | w) / sum_w n(w), where n(w) is the expected
        number of times window w is seen and next | w mixes the states that can sit behind w.
        Equal to entropy_per_token() when the last k tokens always determine the state."""
        arcs = [[(int(t), int(self.NEXT[q, t]), float(self.P[q, t]))
                 for t in np.flatnonzero(self.NEXT[q] >= 0)] for q in range(len(self.states))]
        seen: dict[tuple, float] = defaultdict(float)  # (window, state) -> expected visits
        front = {((BOS,) * k, 0): 1.0}
        while front:
            nxt: dict[tuple, float] = defaultdict(float)
            for (w, q), mass in front.items():
                seen[(w, q)] += mass
                for tok, to, p in arcs[q]:
                    nxt[(w[1:] + (tok,), to)] += mass * p
            front = nxt
        mix: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(V))
        for (w, q), mass in seen.items():
            mix[w] += mass * self.P[q]
        total, ce = 0.0, 0.0
        for m in mix.values():
            n = m.sum()
            p = m[m > 0] / n
            total += n
            ce -= n * float(p @ np.log(p))
        return ce / total


# ---- the hidden rater ---------------------------------------------------------------------

WORD_VALUE = {"helps": 1.0, "likes": 0.5, "sings": 0.5, "chases": -1.0, "quietly": 0.5,
              "child": 0.3, "small": 0.2, "robot": -0.5, "but": -0.3}
UNGRAMMATICAL = -3.0


def gold_reward(tokens: np.ndarray, grammar: Grammar) -> np.ndarray:
    """The hidden rater's score of each sentence  (RLHF.4):

        gold(y) = sum over the DISTINCT words w of y of value(w)  -  3 [y is not in the language]

    The rater likes kindness ("helps", "likes"), "quietly", children and small things, dislikes
    chasing, robots and "but". The twists a small reward model can get wrong: a word counts once
    however often it is repeated, and a sentence the grammar cannot produce (or one cut off
    before <eos>) costs 3; the reference model almost never writes such sentences, so the reward
    model sees none in training and can only extrapolate there. Its input is also the last
    k tokens only, so it cannot see the start of a long sentence."""
    value = np.zeros(V)
    for w, x in WORD_VALUE.items():
        value[TOKEN[w]] = x
    out = np.empty(len(tokens))
    bad = ~np.isfinite(grammar.log_prob(tokens))
    for i, row in enumerate(tokens):
        end = np.flatnonzero(row == EOS)
        words = row[: end[0]] if len(end) else row
        out[i] = value[np.unique(words)].sum() + UNGRAMMATICAL * bad[i]
    return out


def to_words(row: np.ndarray) -> str:
    """One token row as text, up to and including its first <eos>."""
    out = []
    for tok in row:
        out.append(VOCAB[int(tok)])
        if tok == EOS:
            break
    return " ".join(out)
