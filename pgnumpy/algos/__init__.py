"""One readable file per algorithm, and the registry of them by name: the CLI's --algo, the API,
and the checkpoint reader (which builds a saved config through its class) all look here."""

from pgnumpy.algos import ppo, simple_pg, trpo, vpg

ALGOS = {
    "ppo": (ppo.PPOConfig, ppo.train),
    "vpg": (vpg.VPGConfig, vpg.train),
    "trpo": (trpo.TRPOConfig, trpo.train),
    "simple_pg": (simple_pg.SimplePGConfig, simple_pg.train),
}
