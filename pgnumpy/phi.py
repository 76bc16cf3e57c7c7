"""The gradient forms Phi_t, selectable by name.

    grad J = E_tau[ sum_t grad log pi(a_t|s_t) Phi_t ]                                   (PG.4)

| name           | Phi_t                            | E[batch sum] (RTG.3-4)          | critic |
|----------------|----------------------------------|---------------------------------|--------|
| "return"       | R(tau), from its episode's start | grad J_gamma (PG.3)             | -      |
| "rtg"          | sum_{k>=t} gamma^(k-t) r_k       | g_1 (RTG.4)                     | -      |
| "rtg-baseline" | rtg_t - V(s_t)                   | g_1, any b(s_t) (BL.1)          | V      |
| "q"            | Q_w(s_t, a_t)                    | g_1 if Q_w = Q^pi (QA.1)        | Q      |
| "gae"          | GAE(gamma, lambda) advantage     | g_1 if V = V^pi or lam = 1      | V      |

g_1 is the policy-gradient sum with every state visit counted once instead of gamma^t times: the
forms other than R(tau) drop the gamma^t in front of Phi_t, as every implementation does; at
gamma = 1, g_1 = grad J (derivations/03-reward-to-go.md, tests/test_exact_layout.py). Each
bootstrap (truncations, the cut) must be V of the true next state for these to hold exactly.

Ends of episodes, where every form agrees:
- termination: nothing after it; no bootstrap (the value of a terminal state is 0).
- time-limit truncation and the rollout's cut: with a critic V, bootstrap with V of the true next
  state (next_val); without one (simple_pg with "return" or "rtg"), the rollout finishes every
  episode (the seed's loop), and a time-limit truncation ends the episode: the objective is then
  the return of the capped episode: R(tau) is exactly unbiased for its gradient, rtg for its g_1.
"""

from __future__ import annotations

import numpy as np

from pgnumpy import kernels
from pgnumpy.errors import UserError

# name -> which critic the form needs ("v", "q" or None)
PHI_FORMS: dict[str, str | None] = {
    "return": None,
    "rtg": None,
    "rtg-baseline": "v",
    "q": "q",
    "gae": "v",
}


def check_phi(name: str) -> str:
    if not isinstance(name, str) or name not in PHI_FORMS:
        raise UserError(f"unknown phi {name!r}; choose one of {', '.join(PHI_FORMS)}")
    return name


def next_values(val: np.ndarray, last_val: np.ndarray) -> np.ndarray:
    """next_val[t] = V(s_{t+1}): val shifted by one step, V(last_obs) after the last step (ROLL.1).

    With NEXT_STEP autoreset the stored obs after an ended episode is its final observation, so
    this is V of the true next state at truncations too (pgnumpy/rollout.py).
    """
    return np.concatenate([val[1:], last_val[None]], axis=0)


def phi(
    name: str,
    rew: np.ndarray,
    term: np.ndarray,
    trunc: np.ndarray,
    gamma: float,
    lam: float = 1.0,
    *,
    valid: np.ndarray,
    val: np.ndarray | None = None,
    next_val: np.ndarray | None = None,
    q_sa: np.ndarray | None = None,
) -> np.ndarray:
    """Phi_t for every step of a (T, N) rollout: the weight in (PG.4).

    The rollout is (rew, term, trunc, valid) in pgnumpy's NEXT_STEP layout (pgnumpy/rollout.py):
    valid is False at reset steps, which belong to no episode. Only R(tau) needs it (where an
    episode starts), but every form takes it, so no caller can hand over half a layout.

    "rtg-baseline" subtracts a state-only baseline (BL.1); "q" weights by Q_w (QA.1).

    val/next_val: V(s_t) and V(s_{t+1}) when a value critic exists (next_val bootstraps
    truncations and the cut; pass None for no critic: no bootstrap). q_sa: Q_w(s_t, a_t).
    """
    check_phi(name)
    if next_val is None:
        next_val = np.zeros(rew.shape)
    if name == "return":
        return kernels.episode_return(rew, term, trunc, valid, next_val, gamma)  # (RET.1)
    if name == "rtg":
        return kernels.reward_to_go(rew, term, trunc, next_val, gamma)  # (RTG.1)
    if name == "rtg-baseline":
        _need(val, "rtg-baseline", "a value critic V")
        return kernels.reward_to_go(rew, term, trunc, next_val, gamma) - val  # (BL.1)
    if name == "q":
        _need(q_sa, "q", "an action-value critic Q")
        return q_sa  # (QA.1)
    _need(val, "gae", "a value critic V")
    return kernels.gae(rew, val, next_val, term, trunc, gamma, lam)  # (GAE.2)


def _need(x, name: str, what: str) -> None:
    if x is None:
        raise ValueError(f"phi {name!r} needs {what}; pass its values")
