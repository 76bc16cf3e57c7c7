"""Issue 23, class 8: the test envs keep the NEXT_STEP layout they promise. Every consumer masks
a reset row (valid False), so a reset row carrying a reward or a flag would pass every test
built on the env: here each env is stepped directly and through rollout.collect, and its reset
rows must hold reward 0, no termination, no truncation, and be exactly the invalid rows."""

from __future__ import annotations

import numpy as np
import pytest
from scripted_env import ScriptedVecEnv

from pgnumpy.exact import EpisodicMDP, TabularMDP, TabularVecEnv, enumerate_columns
from pgnumpy.rollout import Runner, collect


def check_layout(rew, term, trunc, valid, ended_before):
    """(T, N) arrays: a row is a reset row iff the sub-env's previous step ended an episode;
    reset rows hold reward 0 and no flags, and are exactly the rows marked invalid."""
    reset = np.asarray(ended_before, bool)
    assert reset.any() and (~reset).any()  # both kinds of row, or the check says nothing
    np.testing.assert_array_equal(valid, ~reset)
    assert (rew[reset] == 0).all() and not term[reset].any() and not trunc[reset].any()


def ended_rows(term, trunc, first=None):
    """Rows whose previous row (of the same column) ended an episode; row 0 from `first`."""
    ended = term | trunc
    out = np.zeros_like(ended)
    out[1:] = ended[:-1]
    if first is not None:
        out[0] = first
    return out


def test_tabular_vec_env_reset_rows():
    """TabularVecEnv (the env of test_exact's Monte Carlo check), stepped by hand and through
    collect: every H steps an episode terminates, the next row is a reset row with reward 0
    although r(s, a) is never 0 here, no flags, invalid. Planted: the reset row's reward
    kept (rew[self.pending] = 0.0 removed; caught); the reset step counted as step 1 of the
    next episode (self.t reset to 1; caught)."""
    rng = np.random.default_rng(2)
    mdp = TabularMDP.random(rng, 3, 2, 3, 1.0)
    mdp.r[:] = np.abs(mdp.r) + 1.0  # no reward is 0: a leaked one shows
    env = TabularVecEnv(mdp, 5)
    env.reset(seed=0)
    rows = [env.step(rng.integers(0, 2, 5))[1:4] for _ in range(20)]
    rew, term, trunc = (np.stack(x) for x in zip(*rows))
    ended = ended_rows(term, trunc, first=np.zeros(5, bool))
    check_layout(rew, term, trunc, ~ended, ended)
    # an episode is H valid steps, then its reset row: the pattern repeats every H + 1 rows
    np.testing.assert_array_equal(term, np.tile(np.arange(20)[:, None] % (mdp.H + 1) == mdp.H - 1,
                                                (1, 5)))
    b = collect(Runner.start(TabularVecEnv(mdp, 4), seed=1),
                lambda o: (rng.integers(0, 2, len(o)), np.zeros(len(o))), T=13)
    check_layout(b.rew, b.term, b.trunc, b.valid, ended_rows(b.term, b.trunc, np.zeros(4, bool)))


def test_scripted_vec_env_reset_rows():
    """tests/scripted_env.py's ScriptedVecEnv (the wiring tests' env), terminations and
    truncations, through collect over two rollouts (the second starting on a reset row).
    Planted: the reset step paying k + 1 like a real step (caught)."""
    env = ScriptedVecEnv([[(3, "term"), (2, "trunc")], [(1, "trunc"), (4, "term")], [(5, "term")]])
    runner = Runner.start(env, seed=0)
    act = lambda o: (np.zeros(len(o), np.int64), np.zeros(len(o)))  # noqa: E731
    first = np.zeros(3, bool)
    for _ in range(2):
        b = collect(runner, act, T=6)
        check_layout(b.rew, b.term, b.trunc, b.valid, ended_rows(b.term, b.trunc, first))
        first = (b.term | b.trunc)[-1]


@pytest.mark.parametrize("start", ["fresh", "reset", "mid"])
def test_scripted_column_env_reset_rows(start):
    """pgnumpy.exact's ScriptedColumnEnv (the exact layout tests' env), on every path of a
    column (enumerate_columns, through collect): reset rows, including row 0 when the column
    starts on one, hold reward 0 and no flags and are the invalid rows. Planted: the reset step
    paying r(s, a) of the final state (caught)."""
    rng = np.random.default_rng(4)
    mdp = EpisodicMDP.random(rng, 2, 2, 0.9, time_limit=2)
    mdp.r[:] = np.abs(mdp.r) + 1.0
    pi = np.full((2, 2), 0.5)
    cols = enumerate_columns(mdp, pi, T=4, start=start)
    assert (cols.trunc & cols.valid).any() and (cols.term & cols.valid).any()
    ended = ended_rows(cols.term, cols.trunc, np.full(len(cols.prob), start == "reset"))
    check_layout(cols.rew, cols.term, cols.trunc, cols.valid, ended)
