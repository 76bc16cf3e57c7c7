"""The algorithm pages, in Spinning Up's order: key equations, pseudocode, the file, its
hyperparameters, its figure.

What is written here by hand: which labels are an algorithm's key equations, and the pseudocode
of what its training function does, step by step with the labels its comments cite. Everything
else is pulled at build time: the equations' TeX from the derivations, the code from the file,
the hyperparameters (field, default, description) from the config dataclass and the module's
"Hyperparameters" docstring (what `python -m pgnumpy.train --help` prints) or the class's own.
A label or a function named here that no longer exists is a build problem, as anywhere else.
"""

from __future__ import annotations

import dataclasses
import html
import re
from dataclasses import dataclass, field


@dataclass
class Algorithm:
    slug: str
    title: str
    summary: str
    file: str  # the training function's file, shown whole
    train: str  # its training function: "path::name"
    configs: list[tuple[str, str]]  # (module, config class)
    labels: list[str]  # the key equations
    pseudocode: str
    figures: list[tuple[str, str]] = field(default_factory=list)  # (repo path, caption)
    derivations: list[str] = field(default_factory=list)  # derivations/*.md stems to read
    run: str = ""  # the command that trains it

    @property
    def page(self) -> str:
        return f"algo-{self.slug}.html"


ALGORITHMS: list[Algorithm] = [
    Algorithm(
        slug="simple-pg",
        title="Simplest policy gradient",
        summary="the study note's CartPole experiment: one surrogate step per batch of finished "
        "episodes, Φ by name",
        file="pgnumpy/algos/simple_pg.py",
        train="pgnumpy/algos/simple_pg.py::train",
        configs=[("pgnumpy.algos.simple_pg", "SimplePGConfig")],
        labels=["PG.1", "PG.4", "PG.5", "RTG.1", "BL.1"],
        pseudocode="""\
for epoch = 0, 1, ..., epochs - 1:
    1. collect: act with π_θ until steps_per_epoch steps, finishing every episode started
    2. Φ_t for every step (return | rtg | rtg-baseline | q | gae), critics evaluated
       before they are fitted on this batch; no bootstrap at a time-limit end
    3. one Adam step on the surrogate L(θ) = -(1/n) Σ log π_θ(a_t|s_t) Φ_t        (PG.5)
    4. fit the critic, if Φ uses one, to the reward-to-go                     (VAL.1)
""",
        figures=[("plots/simple_pg_loss_vs_return.png",
                  "The return climbs and the surrogate \"loss\" climbs with it, 5 seeds: its "
                  "value is no measure of performance (python -m "
                  "pgnumpy.plots.simple_pg_loss_vs_return).")],
        derivations=["01-simplest-pg", "02-lemmas", "03-reward-to-go", "04-baselines"],
        run="python -m pgnumpy.train --algo simple_pg",
    ),
    Algorithm(
        slug="vpg",
        title="Vanilla policy gradient (VPG)",
        summary="N sub-envs x T steps, GAE advantages from a learned V, one policy step, then "
        "the critic's regression",
        file="pgnumpy/algos/vpg.py",
        train="pgnumpy/algos/vpg.py::train",
        configs=[("pgnumpy.algos.vpg", "VPGConfig")],
        labels=["PG.4", "PG.5", "GAE.1", "GAE.2", "VPG.1", "VAL.1"],
        pseudocode="""\
for epoch = 0, 1, ..., epochs - 1:
    1. collect T steps from each of N sub-envs with π_θ (episodes continue across epochs)
    2. V on the whole batch in one forward; bootstrap truncations and the cut with
       V of the true next state, never terminations                            (ROLL.1)
    3. Φ_t by name, default GAE-λ: Â_t = Σ_l (γλ)^l δ_{t+l}                     (GAE.2)
       normalised over the batch                                               (VPG.1)
    4. one Adam step on the surrogate, gradient clipped to max_grad_norm        (PG.5)
    5. vf_iters full-batch Adam steps regressing V on the reward-to-go           (VAL.1)
""",
        figures=[("plots/phi_forms.png",
                  "VPG on CartPole-v1 with each of the five Φ forms, 5 seeds each, mean ± std "
                  "(python -m pgnumpy.plots.phi_forms).")],
        derivations=["05-q-and-advantage", "06-gae", "07-termination-truncation", "08-vpg"],
        run="python -m pgnumpy.train --algo vpg",
    ),
    Algorithm(
        slug="ppo",
        title="Proximal policy optimisation (PPO-clip, PPO-KL)",
        summary="several epochs of minibatch steps on one batch, kept near the sampling policy by "
        "the clipped ratio (or an adaptive KL penalty)",
        file="pgnumpy/algos/ppo.py",
        train="pgnumpy/algos/ppo.py::train",
        configs=[("pgnumpy.algos.ppo", "PPOConfig")],
        labels=["PPO.1", "PPO.2", "PPO.3", "GAE.2", "VAL.1", "VAL.2", "CLIP.1", "ADAM.1",
                "PPOKL.1", "PPOKL.3"],
        pseudocode="""\
step = the reference minibatch step (below), or fused.PPOUpdate.step: chosen once
for iteration k = 0, 1, ..., total_steps / (N T) - 1:
    anneal lr linearly to 0
    1. collect T steps from each of N sub-envs with π_θk; keep log π_θk(a|s)
    2. V on the whole batch; GAE advantages, bootstrapped at truncations and the cut (GAE.2);
       value targets R̂ = Â + V
    3. for epoch = 1 .. update_epochs:
           shuffle the batch; for each of `minibatches` minibatches:
               Â ← normalise(Â) over the minibatch
               r = exp(log π_θ - log π_θk)                                       (PPO.1)
               L = -mean min(r Â, g(ε, Â))  (clip)  or  -mean r Â + β KL  (kl)    (PPO.2, PPOKL.1)
                   - ent_coef H  +  vf_coef (V - R̂)²                              (VAL.1)
               clip the global gradient norm over both networks                  (CLIP.1)
               one Adam step on the policy and on V                              (ADAM.1)
           stop early once the approximate KL passes target_kl (clip)
    4. kl variant: adapt β from the KL the update moved                         (PPOKL.3)
""",
        figures=[("plots/benchmark_ppo_cartpole.png",
                  "PPO-clip on CartPole-v1 with the defaults, seeds 0-4, mean ± std of the "
                  "last-100-episode return (python -m pgnumpy.train --seed S for S in 0-4, then "
                  "python -m pgnumpy.plot on the five runs). All five solved, at 63,717-87,106 env "
                  "steps, in 2.37-5.36 s of training on a machine shared with other jobs (load "
                  "average ~10 on 2 cores; the benchmark's median is 0.39 s)."),
                 ("plots/cartpole_before_after.gif",
                  "CartPole-v1: the untrained policy (left) beside the one PPO trains by default "
                  "(right)."),
                 ("plots/ppo_clip_objective.png",
                  "The clipped objective and its gradient against the ratio, drawn by "
                  "ppo_clip_loss itself (python -m pgnumpy.plots.ppo_clip_objective).")],
        derivations=["09-ppo-clip", "10-ppo-kl", "value-loss", "adam"],
        run="python -m pgnumpy.train  (PPO-clip on CartPole-v1 is the default)",
    ),
    Algorithm(
        slug="trpo",
        title="Trust region policy optimisation (TRPO)",
        summary="the natural-gradient step to the edge of a KL trust region, by conjugate "
        "gradient on hand-derived Fisher-vector products, then a line search",
        file="pgnumpy/algos/trpo.py",
        train="pgnumpy/algos/trpo.py::train",
        configs=[("pgnumpy.algos.trpo", "TRPOConfig")],
        labels=["TRPO.1", "TRPO.3", "TRPO.4", "TRPO.5", "TRPO.6", "TRPO.8", "TRPO.9"],
        pseudocode="""\
for iteration k = 0, 1, ..., total_steps / (N T) - 1:
    1. collect T steps from each of N sub-envs with π_old
    2. V on the whole batch; GAE advantages (GAE.2), bootstrapped, normalised
    3. g = ∇L(θ_old), L = mean r Â                                              (TRPO.3)
    4. x ≈ (F + damping I)⁻¹ g by cg_iters conjugate-gradient iterations, each
       needing only F v = Jᵀ M J v (forward mode, the distribution's Fisher,
       backward)                                                     (TRPO.4, TRPO.5, TRPO.6)
       full step s = sqrt(2δ / xᵀ F x) x                                         (TRPO.8)
    5. backtracking line search: the first θ_old + c^j s that improves L and keeps
       the mean KL ≤ δ; else keep θ_old                                           (TRPO.9)
    6. regress V on the bootstrapped reward-to-go                                (VAL.1)
""",
        figures=[("plots/benchmark_trpo_cartpole.png",
                  "TRPO on CartPole-v1 with the defaults, seeds 0-4, mean ± std of the last-100-"
                  "episode return (python -m pgnumpy.train --algo trpo --seed S for S in 0-4, then "
                  "python -m pgnumpy.plot on the five runs). All five solved, at 71,304-132,606 "
                  "env steps. Drawn on a machine shared with other jobs (load average ~10 on 2 "
                  "cores): the right panel's seconds are that machine's, 10-21 s a run here "
                  "against the benchmark's 2.76 s median; the env-steps panel does not depend on "
                  "timing.")],
        derivations=["11-trpo"],
        run="python -m pgnumpy.train --algo trpo",
    ),
    Algorithm(
        slug="rlhf",
        title="RLHF: pretraining, the reward model, RL fine-tuning",
        summary="the three stages at toy scale on a grammar with exact entropy: maximum "
        "likelihood, Bradley–Terry, PPO under a KL penalty",
        file="pgnumpy/rlhf/finetune.py",
        train="pgnumpy/rlhf/pipeline.py::run",
        configs=[("pgnumpy.rlhf.lm", "LMConfig"), ("pgnumpy.rlhf.reward_model", "RMConfig"),
                 ("pgnumpy.rlhf.finetune", "RLConfig"), ("pgnumpy.rlhf.pipeline", "RLHFConfig")],
        labels=["RLHF.6", "RLHF.8", "RLHF.10", "RLHF.11", "RLHF.12", "RLHF.13", "RLHF.14"],
        pseudocode="""\
stage lm (pgnumpy/rlhf/lm.py::pretrain):
    minibatch Adam on the next-token cross-entropy over the grammar's corpus       (RLHF.6)
stage rm (pgnumpy/rlhf/reward_model.py::train_reward_model):
    label pairs from the LM's samples by a noisy rater; Adam on Bradley–Terry      (RLHF.8)
    normalise the head to zero mean, unit std on reference samples              (RLHF.9)
stage rl (pgnumpy/rlhf/finetune.py::rl_finetune), for each iteration:
    1. sample `batch` sentences from π; score tokens under π and π_ref, states under V,
       sentences under the reward model
    2. per-token reward r_t = -β (log π - log π_ref) + [t = T] r(y)               (RLHF.12)
       GAE with γ = 1, whitened over the batch                                  (RLHF.13)
    3. update_epochs x minibatches PPO-clip steps and value regression            (PPO.2)
    4. adaptive β: move towards the KL target                                     (RLHF.14)
""",
        figures=[("plots/rlhf_lm_loss.png", "The LM's cross-entropy against the grammar's exact "
                  "entropy."),
                 ("plots/rlhf_rm_accuracy.png", "The reward model's accuracy against the best "
                  "possible on noisy labels."),
                 ("plots/rlhf_overoptimisation.png", "Proxy and gold reward against KL(π‖π_ref) "
                  "for several β (python -m pgnumpy.rlhf)."),
                 ("plots/rlhf_exact.png", "On an enumerated toy: exact KL to the optimum, "
                  "best-of-n, gold against √KL (python -m pgnumpy.plots.rlhf_exact).")],
        derivations=["12-rlhf", "13-rlhf-exact"],
        run="python -m pgnumpy.rlhf --out runs/rlhf",
    ),
]


def class_field_help(doc: str) -> dict[str, str]:
    """'a / b: text; c, d: text' in a config class's docstring -> each field's text."""
    out: dict[str, str] = {}
    for para in doc.split("\n\n"):
        flat = " ".join(para.split())
        for chunk in re.split(r";\s+", flat):
            m = re.search(r"(?:^|\.\s)([\w ,/]+?):\s+(.+)$", chunk)
            if not m:
                continue
            for name in re.split(r"\s*(?:,|/| x )\s*", m.group(1).strip()):
                if re.fullmatch(r"\w+", name) and name not in out:
                    out[name] = m.group(2).rstrip(".")
    return out


def _default(value) -> str:
    """A nested config's default by its class name (its own table lists its fields)."""
    if dataclasses.is_dataclass(value):
        return f"{type(value).__name__}()"
    return repr(value)


def hyperparameters(site, module_name: str, cls_name: str) -> str:
    import importlib

    from pgnumpy.docs.build import config_rows

    module = importlib.import_module(module_name)
    extra = class_field_help(getattr(module, cls_name).__doc__ or "")
    rows = config_rows(module_name, cls_name, _default)
    body = ""
    for name, default, desc in rows:
        text = " ".join((desc or extra.get(name, "")).split())
        body += (f"<tr><td><code>{html.escape(name)}</code></td><td><code>{html.escape(default)}"
                 f"</code></td><td>{site.link_text(html.escape(text), code=False)}</td></tr>")
    path = module_name.replace(".", "/") + ".py"
    href = site.ref_href(path, cls_name)
    return (f"<h3><a class='ref' href='{href}'><code>{cls_name}</code></a></h3>"
            "<table class='hyper'><thead><tr><th>field</th><th>default</th><th>what it sets"
            f"</th></tr></thead><tbody>{body}</tbody></table>")


def render(site, algo: Algorithm) -> str:
    from pgnumpy.docs.build import tex_to_mathml

    eqs = []
    for label in algo.labels:
        eq = site.equations.get(label)
        if eq is None:
            site._problem(f"key equation ({label}): no equation has this label")
            continue
        body = tex_to_mathml(eq.tex, True, site._problem)
        code = ", ".join(f"<a class='ref' href='{site.ref_href(p, n)}'><code>{html.escape(n)}"
                         "</code></a>" for p, n in eq.code)
        eqs.append(f"<div class='keyeq'><div class='eq'><div class='eqbody'>{body}</div>"
                   f"<a class='eqno' "
                   f"href='{eq.page}#{label}'>({label})</a></div><div class='eqmeta'>from "
                   f"<a href='{eq.page}#{label}'>{html.escape(eq.title)}</a>; computed by "
                   f"{code}</div></div>")
    pseudo = site.link_text(html.escape(algo.pseudocode), code=False)
    path, name = algo.train.split("::")
    train_href = site.ref_href(path, name)
    src = site.sources.get(algo.file)
    listing = ""
    if src is None:
        site._problem(f"{algo.file}: no such file")
    else:
        listing = (f"<details class='src' open><summary><a class='ref' href='{src.page}'>"
                   f"<code>{html.escape(algo.file)}</code></a> <span class='lines'>"
                   f"{len(src.lines)} lines</span></summary>"
                   f"{site.snippet(src, 1, len(src.lines))}</details>")
    hyper = "".join(hyperparameters(site, m, c) for m, c in algo.configs)
    figs = []
    for rel, caption in algo.figures:
        href = site.map_link(rel, site_root())
        figs.append(f"<figure><img src='{href}' alt='{html.escape(caption)}' loading='lazy'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    reading = ", ".join(f"<a href='{d}.html'>{html.escape(site.title_of_page(d))}</a>"
                        for d in algo.derivations)
    return (
        f"<article class='prose algo'><h1>{html.escape(algo.title)}</h1>"
        f"<p class='lead'>{html.escape(algo.summary[:1].upper() + algo.summary[1:])}.</p>"
        f"<p>Derived in: {reading}. Train it: <code>{html.escape(algo.run)}</code>.</p>"
        "<h2 id='key-equations'>Key equations</h2>" + "".join(eqs)
        + "<h2 id='pseudocode'>Pseudocode</h2>"
        f"<p>What <a class='ref' href='{train_href}'><code>{html.escape(algo.train)}</code></a> "
        "does, step by step; the labels are the ones its comments cite.</p>"
        f"<pre class='pseudo'>{pseudo}</pre>"
        "<h2 id='hyperparameters'>Hyperparameters</h2>"
        "<p>Generated from the config dataclass and its documentation (what "
        "<code>--help</code> prints).</p>" + hyper
        + ("<h2 id='figure'>Figure</h2>" + "".join(figs) if figs else "")
        + "<h2 id='the-code'>The code</h2>" + listing + "</article>")


def site_root():
    from pgnumpy.docs.build import ROOT

    return ROOT
