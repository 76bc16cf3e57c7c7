"""Adam (Kingma & Ba, 2015), bias-corrected, and global-norm gradient clipping."""

from __future__ import annotations

import math

import numpy as np


class Adam:
    """Adam on one flat parameter array, updated in place (so MLP layer views stay valid).

        m <- b1 m + (1 - b1) g,     v <- b2 v + (1 - b2) g^2                 (ADAM.1)
        m_hat = m / (1 - b1^t),     v_hat = v / (1 - b2^t)                    (ADAM.2)
        theta <- theta - lr m_hat / (sqrt(v_hat) + eps)                       (ADAM.3)

    The bias correction undoes the zero initialisation of m and v: without it the first steps
    would be ~(1 - b1) times too small.
    """

    def __init__(
        self,
        params: np.ndarray,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self.t = 0

    def step(self, grad: np.ndarray) -> None:
        """One update, (ADAM.1) -> (ADAM.2) -> (ADAM.3), in place.

        (ADAM.2) is folded into two scalars, the form Kingma & Ba give for efficiency: with
        c1 = 1 - b1^t and c2 = 1 - b2^t,
            lr m_hat / (sqrt(v_hat) + eps) = (lr sqrt(c2) / c1) m / (sqrt(v) + eps sqrt(c2)),
        the same step without the two bias-corrected copies of m and v.
        """
        b1, b2 = self.betas
        self.t += 1
        self.m *= b1
        self.m += (1 - b1) * grad  # (ADAM.1)
        self.v *= b2
        self.v += (1 - b2) * np.square(grad)
        sqrt_c2 = math.sqrt(1 - b2**self.t)  # (ADAM.2), folded; a Python float keeps float32
        denom = np.sqrt(self.v)
        denom += self.eps * sqrt_c2
        step = self.m * (self.lr * sqrt_c2 / (1 - b1**self.t))
        step /= denom
        self.params -= step.astype(self.params.dtype, copy=False)  # (ADAM.3)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "m": self.m.copy(),
            "v": self.v.copy(),
            "t": np.array(self.t),
            "lr": np.array(self.lr),
        }

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        self.m[:] = d["m"]
        self.v[:] = d["v"]
        self.t = int(d["t"])
        self.lr = float(d["lr"])


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale grad in place so its L2 norm is at most max_norm (CLIP.1); return the norm before."""
    norm = float(np.sqrt(np.dot(grad, grad)))
    if norm > max_norm:
        grad *= max_norm / norm
    return norm
