"""The reward model: a scalar head on the language model's trunk, learned from preferences.

    pairs (y_a, y_b) sampled from the reference LM
      -> the hidden rater prefers y_a with probability sigmoid((g(y_a) - g(y_b)) / tau)   (RLHF.7)
      -> r(y) = head(trunk(window ending at y's last token)), trained on
         L = -mean log sigmoid(r(y_w) - r(y_l))                                             (RLHF.8)
      -> shifted and scaled so that r has mean 0, std 1 on reference samples              (RLHF.9)

As in InstructGPT, the trunk starts as the pretrained LM (its embeddings and hidden layers) and
the score is read at the last position: here the window of the last k tokens, <eos> included.
The labels are noisy on purpose, so no model reaches 100%: the best any model can do on them is
E[max(p, 1 - p)] with p the rater's probability (best_accuracy), reported beside the RM's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pgnumpy.config import check_int, check_range, plain, user_config
from pgnumpy.errors import UserError
from pgnumpy.optim import Adam
from pgnumpy.rlhf.grammar import BOS, EOS, Grammar, gold_reward
from pgnumpy.rlhf.lm import TinyLM, WindowNet, check_stage_args


def last_window(tokens: np.ndarray, k: int) -> np.ndarray:
    """(B, k): the last k tokens of each row, up to and including its first <eos> (or the whole
    row's last k if it has none), BOS-padded on the left."""
    B, L = tokens.shape
    has_eos = (tokens == EOS).any(axis=1)
    end = np.where(has_eos, (tokens == EOS).argmax(axis=1), L - 1)  # index of the last token
    padded = np.concatenate([np.full((B, k), BOS, tokens.dtype), tokens], axis=1)
    return padded[np.arange(B)[:, None], end[:, None] + 1 + np.arange(k)]


def bt_loss(r_w: np.ndarray, r_l: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Bradley-Terry: L = -(1/n) sum_i log sigmoid(r_w,i - r_l,i), and its gradients  (RLHF.8).

    With d = r_w - r_l, -log sigmoid(d) = log(1 + e^{-d}) (computed as logaddexp(0, -d), so no
    overflow), and d/dd = -sigmoid(-d): dL/dr_w = -sigmoid(-d)/n, dL/dr_l = +sigmoid(-d)/n.
    The pair pushes its two scores apart by how wrong the model is, sigmoid(-d)."""
    d = r_w - r_l
    n = len(d)
    s = 0.5 * (1.0 - np.tanh(0.5 * d))  # sigmoid(-d), stable for any d
    return float(np.logaddexp(0.0, -d).mean()), -s / n, s / n


class RewardModel(WindowNet):
    """r(y) = WindowNet(last_window(y)): the LM's trunk with a scalar head  (RLHF.8)."""

    def __init__(self, context: int, d_embed: int, hidden: Sequence[int], *,
                 rng: np.random.Generator, dtype=np.float64):
        super().__init__(context, d_embed, hidden, 1, rng=rng, dtype=dtype, out_gain=0.1)

    @classmethod
    def from_lm(cls, lm: TinyLM, rng: np.random.Generator) -> RewardModel:
        """Embeddings and hidden layers copied from the LM; a fresh small head."""
        rm = cls(lm.context, lm.d_embed, lm.hidden, rng=rng, dtype=lm.params.dtype)
        rm.emb.E[:] = lm.emb.E
        for l in range(len(lm.hidden)):
            rm.net.W[l][:] = lm.net.W[l]
            rm.net.b[l][:] = lm.net.b[l]
        return rm

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """r(y) for each row of tokens, (B,)."""
        return self(last_window(tokens, self.context))[:, 0].astype(np.float64)

    def loss_and_grad(self, y_w: np.ndarray, y_l: np.ndarray) -> tuple[float, np.ndarray]:
        """The Bradley-Terry loss of a batch of (winner, loser) pairs and dL/dparams  (RLHF.8):
        one forward over the 2n windows, (RLHF.8) for dL/dr, then backward (RLHF.5)."""
        n = len(y_w)
        ctx = np.concatenate([last_window(y_w, self.context), last_window(y_l, self.context)])
        r, cache = self.forward(ctx)
        loss, dr_w, dr_l = bt_loss(r[:n, 0], r[n:, 0])
        return loss, self.backward(cache, np.concatenate([dr_w, dr_l])[:, None])

    def normalize(self, tokens: np.ndarray) -> tuple[float, float]:
        """Fold r <- (r - mean) / std, measured on `tokens`, into the head  (RLHF.9); returns
        (mean, std). The head is linear, so W <- W / std, b <- (b - mean) / std does it exactly
        and leaves every preference (every difference's sign) unchanged."""
        r = self.score(tokens)
        mean, std = float(r.mean()), float(r.std())
        self.net.W[-1][:] /= std
        self.net.b[-1][:] = (self.net.b[-1] - mean) / std
        return mean, std


def preference_pairs(
    lm: TinyLM, grammar: Grammar, n: int, temperature: float, rng: np.random.Generator,
    max_len: int,
) -> dict[str, np.ndarray]:
    """n pairs sampled from the LM, labelled by the rater  (RLHF.7): y_w is the preferred one.

    Returns y_w, y_l (n, max_len) and p, the rater's probability of the label it gave
    (its probability of preferring y_a is sigmoid((g_a - g_b) / temperature))."""
    y_a, y_b = lm.sample(n, rng, max_len), lm.sample(n, rng, max_len)
    g_a, g_b = gold_reward(y_a, grammar), gold_reward(y_b, grammar)
    p_a = 0.5 * (1.0 + np.tanh(0.5 * (g_a - g_b) / temperature))  # sigmoid
    a_wins = rng.random(n) < p_a
    return {"y_w": np.where(a_wins[:, None], y_a, y_b), "y_l": np.where(a_wins[:, None], y_b, y_a),
            "p": np.where(a_wins, p_a, 1.0 - p_a), "gold_gap": np.abs(g_a - g_b)}


def best_accuracy(p: np.ndarray) -> float:
    """E[max(p, 1 - p)]: the expected accuracy, on labels drawn with probabilities p, of the
    best possible predictor (the one that always names the rater's more likely choice)  (RLHF.7)."""
    return float(np.maximum(p, 1.0 - p).mean())


@user_config
@dataclass
class RMConfig:
    """pairs / heldout: labelled pairs for training / evaluation; temperature: the rater's noise
    tau in (RLHF.7); norm_samples: reference samples for the normalisation (RLHF.9)."""

    pairs: int = 10000
    heldout: int = 1000
    temperature: float = 0.5
    steps: int = 800
    batch: int = 128
    lr: float = 1e-3
    norm_samples: int = 2000
    eval_every: int = 250

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """UserError naming the first bad field (also called by train_reward_model)."""
        plain(self)
        for name in ("pairs", "heldout", "steps", "batch", "eval_every"):
            check_int(f"rm.{name}", getattr(self, name))
        check_int("rm.norm_samples", self.norm_samples, lo=2,
                  why=" (the normalisation divides by the scores' std, RLHF.9)")
        check_range("rm.temperature", self.temperature, 0, None, lo_open=True)
        check_range("rm.lr", self.lr, 0, None, lo_open=True)


def accuracy(rm: RewardModel, data: dict[str, np.ndarray]) -> float:
    """Fraction of pairs whose label the RM agrees with: r(y_w) > r(y_l)."""
    return float(np.mean(rm.score(data["y_w"]) > rm.score(data["y_l"])))


def train_reward_model(
    cfg: RMConfig, lm: TinyLM, grammar: Grammar, rng: np.random.Generator, max_len: int,
    log: Callable[[dict], None] = lambda row: None,
) -> tuple[RewardModel, list[dict], dict]:
    """Label pairs from the reference LM, train with Adam on (RLHF.8), normalise (RLHF.9).

    Returns (rm, history, summary); the summary holds the held-out accuracy and the best
    accuracy possible on the same held-out labels."""
    check_stage_args(cfg, RMConfig, rng)
    if not isinstance(lm, TinyLM):
        raise UserError(f"lm must be a TinyLM (pretrain's), got {str(lm)[:60]!r}")
    check_int("max_len", max_len, lo=Grammar().max_len, why=" (the grammar's longest sentence)")
    train = preference_pairs(lm, grammar, cfg.pairs, cfg.temperature, rng, max_len)
    test = preference_pairs(lm, grammar, cfg.heldout, cfg.temperature, rng, max_len)
    rm = RewardModel.from_lm(lm, rng)
    opt = Adam(rm.params, lr=cfg.lr)
    history, start, recent = [], time.perf_counter(), []
    for step in range(1, cfg.steps + 1):
        idx = rng.integers(0, cfg.pairs, cfg.batch)
        loss, grad = rm.loss_and_grad(train["y_w"][idx], train["y_l"][idx])
        opt.step(grad)
        recent.append(loss)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"step": step, "train_loss": float(np.mean(recent)),
                   "train_acc": accuracy(rm, train), "heldout_acc": accuracy(rm, test),
                   "best_acc": best_accuracy(test["p"]),
                   "wall_s": round(time.perf_counter() - start, 3)}
            recent = []
            history.append(row)
            log(row)
    mean, std = rm.normalize(lm.sample(cfg.norm_samples, rng, max_len))
    summary = {"heldout_acc": history[-1]["heldout_acc"], "best_acc": best_accuracy(test["p"]),
               "train_acc": history[-1]["train_acc"], "raw_mean": mean, "raw_std": std}
    return rm, history, summary
