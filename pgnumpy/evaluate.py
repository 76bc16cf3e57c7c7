"""`python -m pgnumpy.evaluate RUN_DIR`: how good is a trained policy, and what does it look like.

    python -m pgnumpy.evaluate RUN_DIR --episodes 20            # mean +- std return, greedy actions
    python -m pgnumpy.evaluate RUN_DIR --sample                 # actions sampled from pi(.|s)
    python -m pgnumpy.evaluate RUN_DIR --gif cartpole.gif       # render one episode
    python -m pgnumpy.evaluate RUN_DIR --gif cmp.gif --compare-untrained   # before | after

The untrained policy is the network the run started from (same config, same seed), so the
comparison is the study note's before/after CartPole picture.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from pgnumpy import cli

if __name__ == "__main__":
    cli.guard_startup()

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # rgb_array rendering needs no screen

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from pgnumpy.api import Agent, build_policy, load  # noqa: E402
from pgnumpy.errors import UserError  # noqa: E402
from pgnumpy.fileio import atomic_write  # noqa: E402


def run_episodes(agent: Agent, episodes: int, seed: int, deterministic: bool = True,
                 render: bool = False) -> tuple[list[float], list[np.ndarray]]:
    """Returns of `episodes` episodes (env seeds seed, seed+1, ...), and the first one's frames."""
    env_id = agent.config["env_id"]
    try:  # render_mode only when rendering: a user's env need not take the argument
        env = gym.make(env_id, **({"render_mode": "rgb_array"} if render else {}))
    except Exception as e:
        raise UserError(f"env {env_id!r} could not be created{' for rendering' if render else ''}"
                        f": {type(e).__name__}: {' '.join(str(e).split())}"
                        f"{render_hint(env_id) if render else ''}") from None
    rng = np.random.default_rng(seed)
    returns, frames = [], []
    for k in range(episodes):
        t = 0
        try:
            obs, _ = env.reset(seed=seed + k)
            ret, done = 0.0, False
            while not done:
                if render and k == 0:
                    frames.append(env.render())
                obs, r, term, trunc, _ = env.step(agent.act(obs, deterministic, rng))
                ret += float(r)
                done, t = term or trunc, t + 1
        except UserError:
            raise
        except Exception as e:  # the env's own failure: which env, which episode and step
            raise UserError(f"env {env_id!r} failed in evaluation episode {k} at step {t}: "
                            f"{type(e).__name__}: {' '.join(str(e).split())}"
                            f"{render_hint(env_id) if render else ''}") from None
        returns.append(ret)
    env.close()
    return returns, frames


def render_hint(env_id: str) -> str:
    """What a failed render on a machine without a display most likely needs: MuJoCo renders
    through OpenGL, headless only with MUJOCO_GL=egl (or osmesa) set before it is imported."""
    try:
        entry = str(gym.spec(env_id.split(":", 1)[-1]).entry_point)
    except Exception:  # noqa: BLE001 - a hint only; the error itself is already said
        return ""
    if "mujoco" in entry and "MUJOCO_GL" not in os.environ:
        return ("; MuJoCo renders with OpenGL: on a machine without a display, run with "
                "MUJOCO_GL=egl (or MUJOCO_GL=osmesa) set")
    return ""


def write_gif(path: str, panels: list[list[np.ndarray]], labels: list[str], fps: int = 25,
              every: int = 2) -> None:
    """Side-by-side labelled panels (each a list of frames) as an animated GIF; a shorter panel
    holds its last frame. Every `every`-th frame, halved in size, keeps the file small."""
    from PIL import Image, ImageDraw

    n = max(len(p) for p in panels)
    images = []
    for t in range(0, n, every):
        row = np.concatenate([p[min(t, len(p) - 1)][::2, ::2] for p in panels], axis=1)
        image = Image.fromarray(row)
        draw = ImageDraw.Draw(image)
        width = row.shape[1] // len(panels)
        for k, label in enumerate(labels):
            draw.text((k * width + 8, 8), f"{label}  step {min(t, len(panels[k]) - 1)}", fill=0)
        images.append(image)
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=1000 // fps, loop=0)
    atomic_write(path, buf.getvalue())


def check_gif_path(path: str) -> None:
    """Before any episode is run: a .gif name in a directory that exists."""
    p = Path(path)
    if p.suffix.lower() != ".gif":
        raise UserError(f"--gif {path}: the file name must end in .gif")
    if not p.parent.is_dir():
        raise UserError(f"--gif {path}: the directory {p.parent} does not exist")
    if p.is_dir():
        raise UserError(f"--gif {path} is a directory; give a file name ending in .gif")


def _main(argv: list[str] | None) -> int:
    p = cli.ArgumentParser(
        prog="python -m pgnumpy.evaluate", description=__doc__.splitlines()[0]
    )
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=10, help="episodes to average (default: 10)")
    p.add_argument("--sample", action="store_true", help="sample actions instead of the argmax")
    p.add_argument("--seed", type=int, default=10_000, help="env seed of the first episode")
    p.add_argument("--gif", default=None, help="write one rendered episode to this GIF")
    p.add_argument("--compare-untrained", action="store_true",
                   help="with --gif: the untrained policy beside the trained one")
    p.add_argument("--import", dest="import_module", default=None,
                   help="import this module for a run trained on a module:EnvId env (only if "
                        "you trust it: loading a run imports nothing it names by itself)")
    args = p.parse_args(argv)
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    if not 0 <= args.seed <= 2**63 - args.episodes:  # env seeds seed .. seed + episodes - 1
        raise UserError(f"--seed must be an integer in [0, 2**63 - episodes], got {args.seed}")
    if args.compare_untrained and not args.gif:
        raise UserError("--compare-untrained draws the untrained policy beside the trained one "
                        "in the GIF: give --gif FILE.gif too")
    if args.gif:
        check_gif_path(args.gif)
    agent = load(args.run_dir, import_module=args.import_module)
    det = not args.sample
    rets, frames = run_episodes(agent, args.episodes, args.seed, det, render=bool(args.gif))
    mode = "sampled" if args.sample else "greedy"
    print(f"{agent.config['algo']} on {agent.config['env_id']} (epoch {agent.epoch}, {mode} "
          f"actions): return {np.mean(rets):.1f} +- {np.std(rets):.1f} over {len(rets)} "
          f"episodes (min {min(rets):.0f}, max {max(rets):.0f})")
    if args.gif:
        panels, labels = [frames], [f"trained (return {rets[0]:.0f})"]
        if args.compare_untrained:
            untrained = Agent(agent.config, build_policy(agent.config), -1,
                              agent.obs_norm, agent.act_bounds)
            u_rets, u_frames = run_episodes(untrained, 1, args.seed, det, render=True)
            print(f"untrained policy: return {u_rets[0]:.0f} on the same first episode")
            panels = [u_frames, frames]
            labels = [f"untrained (return {u_rets[0]:.0f})", labels[0]]
        write_gif(args.gif, panels, labels)
        print(f"wrote {args.gif}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.entry(_main, argv)


if __name__ == "__main__":
    cli.exit_now(main())  # sys.exit, without the ~0.2 s teardown of numba's modules
