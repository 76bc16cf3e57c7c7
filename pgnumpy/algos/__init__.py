"""One readable file per algorithm, and the registry of them by name: the CLI's --algo, the API,
and the checkpoint reader (which builds a saved config through its class: handed CONFIGS here,
so that pgnumpy/checkpoint.py, which the algorithms import, imports none of them) look here."""

from pathlib import Path

from pgnumpy import checkpoint
from pgnumpy.algos import ppo, simple_pg, trpo, vpg

ALGOS = {
    "ppo": (ppo.PPOConfig, ppo.train),
    "vpg": (vpg.VPGConfig, vpg.train),
    "trpo": (trpo.TRPOConfig, trpo.train),
    "simple_pg": (simple_pg.SimplePGConfig, simple_pg.train),
}
CONFIGS = {name: cls for name, (cls, _) in ALGOS.items()}


def load_checkpoint(path: str | Path) -> checkpoint.Checkpoint:
    """A run's checkpoint.npz (or its run directory's), every field checked:
    pgnumpy.checkpoint.load_checkpoint with these algorithms' config classes."""
    return checkpoint.load_checkpoint(path, CONFIGS)
