"""The policy: a tiny autoregressive language model (Bengio et al., 2003), and its pretraining.

    window of the last k tokens (BOS-padded) -> embeddings, concatenated -> MLP -> logits
    pi(y_t | y_<t) = softmax(logits)_{y_t}                                            (RLHF.5)

A sentence is a row of token ids, padded with <eos> after its first <eos>; position t's state
is the window y_{t-k} .. y_{t-1} and its action is y_t. Pretraining is maximum likelihood:
minimise the mean over every token of -log pi(y_t | window_t) (RLHF.6), with Adam, on a corpus
sampled from the grammar, and compare the held-out cross-entropy with the grammar's exact
entropy per token and with the best any k-token model can do (grammar.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pgnumpy.config import check_hidden, check_int, check_range, plain, user_config
from pgnumpy.distributions import Categorical
from pgnumpy.errors import UserError
from pgnumpy.nn import MLP, Embedding, mlp_size
from pgnumpy.optim import Adam
from pgnumpy.rlhf.grammar import BOS, EOS, Grammar, V


class WindowNet:
    """Embeddings of a window of k tokens, concatenated, through an MLP to n_out numbers.

    params = [embedding table (vocab, d), MLP weights and biases]: one flat vector (the LM, the
    reward model and the value function are all this, with n_out = vocab, 1, 1). vocab is the
    grammar's V; pgnumpy/exact_seq.py builds the same network over a 5-token vocabulary."""

    def __init__(
        self,
        context: int,
        d_embed: int,
        hidden: Sequence[int],
        n_out: int,
        *,
        rng: np.random.Generator,
        dtype=np.float64,
        out_gain: float = 1.0,
        vocab: int = V,
    ):
        self.context, self.d_embed, self.hidden = context, d_embed, tuple(hidden)
        self.vocab = vocab
        self.n_emb = vocab * d_embed
        sizes = [context * d_embed, *self.hidden, n_out]
        self.params = np.zeros(self.n_emb + mlp_size(sizes), dtype)
        self.emb = Embedding(vocab, d_embed, rng=rng, dtype=dtype, params=self.params[: self.n_emb])
        self.net = MLP(sizes, "tanh", rng=rng, dtype=dtype, out_gain=out_gain,
                       params=self.params[self.n_emb :])

    def clone(self) -> WindowNet:
        """A copy with parameters of its own. (copy.deepcopy would copy the layer views apart
        from the flat vector, and an optimizer stepping the vector would then move nothing.)"""
        new = copy.copy(self)
        new.params = self.params.copy()
        new.emb, new.net = copy.copy(self.emb), copy.copy(self.net)
        new.emb.params = new.params[: self.n_emb]
        new.emb.E = new.emb.params.reshape(self.emb.E.shape)
        new.net.params = new.params[self.n_emb :]
        new.net.W, new.net.b = new.net.layer_views(new.net.params)
        return new

    def forward(self, ctx: np.ndarray) -> tuple[np.ndarray, tuple]:
        """(outputs (B, n_out), cache) for windows ctx (B, k) of token ids."""
        y, cache = self.net.forward(self.emb(ctx).reshape(len(ctx), -1))
        return y, (ctx, cache)

    def __call__(self, ctx: np.ndarray) -> np.ndarray:
        return self.forward(ctx)[0]

    def backward(self, cache: tuple, dy: np.ndarray) -> np.ndarray:
        """dL/dparams from dy = dL/d(outputs): the MLP's backward (MLP.1-2) down to its input,
        then the embedding's scatter-add (EMB.1)   (RLHF.5)."""
        ctx, mlp_cache = cache
        g_mlp, dx = self.net.backward(mlp_cache, dy, input_grad=True)
        grad = np.empty_like(self.params)
        grad[: self.n_emb] = self.emb.backward(ctx, dx)
        grad[self.n_emb :] = g_mlp
        return grad


def windows(tokens: np.ndarray, k: int) -> np.ndarray:
    """(B, L, k): the state before each token, y_{t-k} .. y_{t-1}, with BOS before the start."""
    padded = np.concatenate([np.full((len(tokens), k), BOS, tokens.dtype), tokens], axis=1)
    return np.lib.stride_tricks.sliding_window_view(padded, k, axis=1)[:, :-1]


def token_mask(tokens: np.ndarray) -> np.ndarray:
    """(B, L) True up to and including each row's first <eos> (a row without one: all True)."""
    is_eos = tokens == EOS
    return np.cumsum(is_eos, axis=1) - is_eos == 0


class TinyLM(WindowNet):
    """pi(. | window) = Categorical(WindowNet(window))   (RLHF.5).

    Its gradients: loss_and_grad (maximum likelihood, RLHF.6); the RL step's PPO loss goes
    through dist() and WindowNet.backward."""

    def __init__(self, context: int, d_embed: int, hidden: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64, vocab: int = V):
        super().__init__(context, d_embed, hidden, vocab, rng=rng, dtype=dtype, out_gain=0.1,
                         vocab=vocab)

    def dist(self, ctx: np.ndarray) -> tuple[Categorical, tuple]:
        logits, cache = self.forward(ctx)
        return Categorical(logits), cache

    def loss_and_grad(self, ctx: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        """Maximum likelihood: L = -(1/n) sum_i log pi(target_i | ctx_i) and dL/dparams   (RLHF.6).

        dL/dlogits_i = -(onehot(target_i) - p_i) / n by (CAT.2), then backward (RLHF.5)."""
        dist, cache = self.dist(ctx)
        n = len(target)
        loss = -float(dist.log_prob(target).mean())
        return loss, self.backward(cache, -dist.log_prob_grad(target) / n)

    def token_logp(self, tokens: np.ndarray) -> np.ndarray:
        """(B, L) log pi(y_t | y_<t) of every position, one forward over all windows; positions
        after a row's <eos> are computed too (mask them with token_mask)."""
        B, L = tokens.shape
        dist, _ = self.dist(windows(tokens, self.context).reshape(B * L, -1))
        return dist.log_prob(tokens.reshape(-1)).reshape(B, L)

    def sample(self, n: int, rng: np.random.Generator, max_len: int) -> np.ndarray:
        """n sentences of at most max_len tokens, (n, max_len), <eos>-padded after the first
        <eos>; a row that never emits <eos> was cut at the cap."""
        k = self.context
        buf = np.full((n, k + max_len), BOS, np.int64)
        done = np.zeros(n, bool)
        for t in range(max_len):
            tok = Categorical(self(buf[:, t : t + k])).sample(rng)
            buf[:, k + t] = np.where(done, EOS, tok)
            done |= tok == EOS
            if done.all():
                buf[:, k + t + 1 :] = EOS
                break
        return buf[:, k:]


@user_config
@dataclass
class LMConfig:
    """Pretraining. context: k, the window; corpus / heldout: sentences from the grammar."""

    context: int = 5
    d_embed: int = 12
    hidden: tuple[int, ...] = (96,)
    corpus: int = 20000
    heldout: int = 2000
    steps: int = 2500
    batch: int = 256
    lr: float = 3e-3
    eval_every: int = 250

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """UserError naming the first bad field (also called by pretrain: a field may have been
        set after construction)."""
        plain(self)
        self.hidden = check_hidden("lm.hidden", self.hidden)  # a list from config.json too
        for name in ("context", "d_embed", "corpus", "heldout", "steps", "batch", "eval_every"):
            check_int(f"lm.{name}", getattr(self, name))
        check_range("lm.lr", self.lr, 0, None, lo_open=True)


def check_stage_args(cfg, cls, rng) -> None:
    """A stage function's config (of type cls, checked) and its random generator."""
    if not isinstance(cfg, cls):
        raise UserError(f"cfg must be an {cls.__name__}, got {str(cfg)[:60]!r}")
    cfg.check()
    if not isinstance(rng, np.random.Generator):
        raise UserError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {str(rng)[:60]!r}")


def positions(tokens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (window, next token) pair of a set of sentences, as (N, k) and (N,)."""
    mask = token_mask(tokens)
    return windows(tokens, k)[mask], tokens[mask]


def cross_entropy(lm: TinyLM, ctx: np.ndarray, target: np.ndarray, chunk: int = 8192) -> float:
    """Mean -log pi(target | ctx) in nats per token."""
    total = 0.0
    for lo in range(0, len(target), chunk):
        dist, _ = lm.dist(ctx[lo : lo + chunk])
        total -= float(dist.log_prob(target[lo : lo + chunk]).sum())
    return total / len(target)


def pretrain(
    cfg: LMConfig, grammar: Grammar, rng: np.random.Generator,
    log: Callable[[dict], None] = lambda row: None,
) -> tuple[TinyLM, list[dict]]:
    """Maximum likelihood on a sampled corpus with Adam  (RLHF.6); returns (lm, history).

    The learning rate decays linearly to 0; each step is one minibatch of token positions drawn
    uniformly from the corpus; the held-out cross-entropy is measured every eval_every steps."""
    check_stage_args(cfg, LMConfig, rng)
    lm = TinyLM(cfg.context, cfg.d_embed, cfg.hidden, rng=rng)
    ctx, target = positions(grammar.sample(cfg.corpus, rng), cfg.context)
    ctx_ho, target_ho = positions(grammar.sample(cfg.heldout, rng), cfg.context)
    opt = Adam(lm.params, lr=cfg.lr)
    history, start, recent = [], time.perf_counter(), []
    for step in range(1, cfg.steps + 1):
        opt.lr = cfg.lr * (1.0 - (step - 1) / cfg.steps)  # linear decay: a cleaner end point
        idx = rng.integers(0, len(target), cfg.batch)
        loss, grad = lm.loss_and_grad(ctx[idx], target[idx])
        opt.step(grad)
        recent.append(loss)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"step": step, "train_ce": float(np.mean(recent)),
                   "heldout_ce": cross_entropy(lm, ctx_ho, target_ho),
                   "wall_s": round(time.perf_counter() - start, 3)}
            recent = []
            history.append(row)
            log(row)
    return lm, history
