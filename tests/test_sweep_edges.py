"""Issue 22, the sweep's edges (no Ray started here: every case is refused before Ray starts, or
is a piece tested alone): each input checked where it enters (one line, exit 2, nothing
written), OUT claimed before anything is written, and a ranking that reads unsolved
configurations by their returns."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from pgnumpy import rundir
from pgnumpy.algos.ppo import PPOConfig
from pgnumpy.errors import UserError
from pgnumpy.sweep import main, make_trials, run_sweep
from pgnumpy.sweep.space import parse_space
from pgnumpy.sweep.summary import rank_key, summarize, tpe_value
from pgnumpy.sweep.trials import Trial


def listing(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes: what 'nothing written' compares."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(path.rglob("*"))}


def refused(out: Path, args: list[str], capsys) -> str:
    """main(args) must exit 2 with one line on stderr and leave `out` as it was."""
    before = listing(out)
    code = main([*args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert listing(out) == before, "written before refusing"
    if not before:
        assert not out.exists()
    return err


# ------------------------------------------------------------------ a field given twice


@pytest.mark.parametrize("args, message", [
    (["--set", "lr=1e-3", "--set", "lr=2e-3"],
     "--set lr=2e-3: the field lr is given twice (--set lr=1e-3 too)"),
    (["--set", "total_steps=512", "--set", "lr=1e-3", "lr=3e-3"], "the field lr is given twice"),
    (["--grid", "lr=1e-3,2e-3", "--grid", "lr=3e-3"],
     "--grid lr=3e-3: the field lr is given twice (--grid lr=1e-3,2e-3 too)"),
    (["--sample", "lr=uniform:0.1:0.2", "--sample", "learning-rate=uniform:0.1:0.2"],
     "has no field"),
    (["--sample", "lr=uniform:0.1:0.2", "--sample", "lr=uniform:0.3:0.4"],
     "the field lr is given twice"),
    (["--grid", "env=CartPole-v1", "--set", "env_id=Acrobot-v1"],
     "the field env_id is given twice"),
])
def test_a_field_given_twice_is_refused_not_dropped(tmp_path, capsys, args, message):
    assert message in refused(tmp_path / "s", args, capsys)


def test_a_flag_given_twice_adds_to_the_first():
    from pgnumpy.sweep.command import build_parser

    a = build_parser().parse_args(["--set", "lr=1e-3", "--grid", "gamma=0.9,0.99",
                                   "--set", "total_steps=512", "--grid", "lam=0.9,0.95"])
    assert a.set == ["lr=1e-3", "total_steps=512"] and a.grid == ["gamma=0.9,0.99", "lam=0.9,0.95"]


# ------------------------------------------------------------------ layer widths in a grid


@pytest.mark.parametrize("grid, hidden", [
    ("hidden=32x32,64x64", [[32, 32], [64, 64]]),
    ("hidden=32x,64x", [[32], [64]]),
    ("hidden=32x,64x64", [[32], [64, 64]]),
    ("hidden=16x16x16", [[16, 16, 16]]),
    ("hidden=32", [[32]]),
])
def test_grid_layer_widths_train_the_networks_they_say(tmp_path, grid, hidden):
    """What the trials train: each point's `hidden` in its config, as `train --hidden` gets it."""
    fixed, points, _ = parse_space("ppo", [], [grid], [])
    from pgnumpy.sweep.search import grid_points

    got = [make_trials("ppo", fixed, p, 1, tmp_path)[0].config["hidden"]
           for p in grid_points(points)]
    assert got == hidden


def test_set_hidden_is_train_s_form_and_x_means_the_same(tmp_path):
    for form in ("hidden=32,32", "hidden=32x32"):
        fixed, _, _ = parse_space("ppo", [form], [], [])
        assert make_trials("ppo", fixed, {}, 1, tmp_path)[0].config["hidden"] == [32, 32]


@pytest.mark.parametrize("args, message", [
    (["--grid", "hidden=32,32"], "--grid hidden=32,32 is ambiguous: commas separate a grid's "
     "points, but `train --hidden 32,32` is one network of 2 layers; join a point's layers by "
     "x: hidden=32x32 (one network of 2 layers) or hidden=32x,32x (2 one-layer networks)"),
    (["--grid", "hidden=64,32,16"], "hidden=64x32x16 (one network of 3 layers)"),
    (["--sample", "hidden=choice:32,64"], "--sample hidden=choice:32,64 is ambiguous"),
    (["--grid", "hidden=32xx32"], "'32xx32' is not layer widths joined by x"),
    (["--grid", "hidden=32x0"], "hidden must be a non-empty list of layer widths >= 1"),
    (["--grid", "lr=1e-3,,2e-3"], "an empty value between commas"),
])
def test_ambiguous_layer_widths_are_refused_with_the_syntax(tmp_path, capsys, args, message):
    assert message in refused(tmp_path / "s", args, capsys)


# ------------------------------------------------------------------ --sample's bounds


@pytest.mark.parametrize("args, message", [
    (["--sample", "lr=uniform:0:inf"], "LOW and HIGH must be finite numbers"),
    (["--sample", "lr=loguniform:1e-4:inf"], "LOW and HIGH must be finite numbers"),
    (["--sample", "lr=uniform:nan:1"], "LOW and HIGH must be finite numbers"),
    (["--sample", "lr=uniform:-inf:1"], "LOW and HIGH must be finite numbers"),
    (["--sample", "lr=uniform:1:0.5"], "need LOW < HIGH"),
    (["--sample", "lr=uniform:0.5:0.5"], "need LOW < HIGH"),
    (["--sample", "gamma=uniform:-1e308:1e308"], "HIGH - LOW overflows a float"),
    (["--sample", "num_envs=int:1:1e30"], "int bounds beyond"),
    (["--sample", "num_envs=int:4:1"], "need LOW < HIGH"),
    (["--sample", "lr=uniform:0.1:0.2:0.3"], "expected uniform:LOW:HIGH with two numbers"),
    (["--sample", "lr=choice:"], "choice needs values"),
    (["--sample", "gamma=uniform:0.9:1.5", "--trials", "4"], "gamma must be in (0, 1]"),
])
def test_bad_sample_bounds_get_one_line(tmp_path, capsys, args, message):
    assert message in refused(tmp_path / "s", args, capsys)


@pytest.mark.parametrize("args, message", [
    (["--sample", "activation=choice:tanh,nope"],
     "--sample activation: 'nope' (a choice) is refused: activation must be one of"),
    (["--sample", "gamma=uniform:0.9:1.5"], "(an end of its range) is refused: gamma must be"),
    (["--sample", "num_envs=uniform:1:4"], "invalid int value"),
    (["--sample", "lr=loguniform:1e-4:1e-2", "--grid", "gamma=0.9,2"], "gamma must be in"),
    (["--sample", "lr=loguniform:1e-4:1e-2", "--set", "total_steps=0"],
     "total_steps must be an integer >= 1"),
    (["--sample", "lr=loguniform:1e-4:1e-2", "--search-seed", "-1"],
     "--search-seed must be an integer >= 0 and <= 2147483647, got -1"),
])
def test_bayesian_space_is_checked_before_anything_starts(tmp_path, capsys, args, message):
    """TPE's draws are not known up front: what it can ask (each choice, grid value and range
    end) is built into a config first, so a bad one is one line now, not failed trials later."""
    assert message in refused(tmp_path / "s", [*args, "--search", "bayes"], capsys)


@pytest.mark.parametrize("args, message", [
    (["--grid", "anneal_lr=yes,no"], "anneal_lr takes true or false, got 'yes'"),
    (["--set", "norm_obs=1"], "norm_obs takes true or false, got '1'"),
    (["--out", ""], "--out is empty"),
    (["--sample", "lr=uniform:0.1:0.2", "--search-seed", "-1"], "--search-seed must be"),
    (["--sample", "lr=uniform:0.1:0.2", "--search", "bayes", "--search-seed", str(2**32)],
     "--search-seed must be an integer >= 0 and <= 2147483647, got 4294967296"),
])
def test_other_inputs_a_user_tries(tmp_path, capsys, args, message):
    out = tmp_path / "s"
    before = listing(tmp_path)
    code = main([*args] if "--out" in args else [*args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err, err
    assert listing(tmp_path) == before


@pytest.mark.parametrize("kwargs, message", [
    (dict(out=123), "--out must be a directory path, got 123"),
    (dict(seeds="3"), "--seeds must be an integer >= 1, got '3'"),
    (dict(trials=2.0), "--trials must be an integer >= 1, got 2.0"),
    (dict(workers=True), "--workers must be an integer >= 1, got True"),
    (dict(search="grid"), "--search must be one of random, bayes, got 'grid'"),
    (dict(metric="loss"), "--metric must be one of steps, return, got 'loss'"),
    (dict(grid="lr=1e-3,2e-3"), "--grid takes a list of FIELD=VALUE strings"),
    (dict(sets=[("lr", 1e-3)]), "--set takes a list of FIELD=VALUE strings"),
])
def test_run_sweep_from_python_refuses_bad_arguments(tmp_path, kwargs, message):
    kwargs = {"out": tmp_path / "s", **kwargs}
    with pytest.raises(UserError) as e:
        run_sweep("ppo", **kwargs)
    assert message in str(e.value)
    assert listing(tmp_path) == {}


# ------------------------------------------------------------------ OUT is the sweep's alone


def test_a_directory_of_the_users_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.csv").write_text("the user's own table\n")
    err = refused(out, ["--grid", "lr=1e-3"], capsys)
    assert "holds files that are not a pgnumpy sweep (summary.csv)" in err


def test_another_kind_of_pgnumpy_directory_is_refused(tmp_path, capsys):
    rundir.claim(tmp_path / "run", "train").release()
    err = refused(tmp_path / "run", ["--grid", "lr=1e-3"], capsys)
    assert "holds a pgnumpy train directory, not a sweep" in err


def test_one_sweep_process_per_out(tmp_path, capsys):
    """A second sweep on an OUT in use is refused naming the holder (here the holder is this
    process's own claim, as another sweep's would be: flock conflicts per open file)."""
    out = tmp_path / "s"
    with rundir.claim(out, "sweep", what="sweep"):
        err = refused(out, ["--grid", "lr=1e-3"], capsys)
    assert f"is in use by process {os.getpid()}" in err and "one process at a time" in err


def test_a_sweep_directory_from_before_the_marker_is_adopted(tmp_path):
    from pgnumpy.sweep.state import holds_legacy_sweep, new_state, write_state

    out = tmp_path / "old"
    out.mkdir()
    (out / "summary.csv").write_text("config\n")
    assert not holds_legacy_sweep(out)
    write_state(out, new_state({"algo": "ppo"}))
    with rundir.claim(out, "sweep", adopt=holds_legacy_sweep, what="sweep") as rd:
        assert rundir.is_claimed(rd.path, "sweep")
    (out / "sweep.json").write_text('{"format": "something else"}')
    (out / rundir.MARKER).unlink()
    with pytest.raises(UserError, match="not a pgnumpy sweep"):
        rundir.claim(out, "sweep", adopt=holds_legacy_sweep, what="sweep")


# ------------------------------------------------------------------ sweep.json and trial.json


SPEC = {"algo": "ppo", "set": {}, "grid": {}, "sample": {"lr": {
    "kind": "loguniform", "low": 1e-3, "high": 1e-2, "choices": []}}, "search": "bayes",
    "search_seed": 0, "metric": "steps", "seeds": 1, "trials": 2}
BAYES = ["--sample", "lr=loguniform:1e-3:1e-2", "--search", "bayes", "--trials", "2"]


def _edit(state: dict, path: str, value) -> dict:
    state = json.loads(json.dumps(state))
    *head, last = path.split(".")
    node = state
    for k in head:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return state


@pytest.mark.parametrize("edit, message", [
    ("not json{", "is damaged"),
    ([1, 2], "not a JSON object"),
    (("format", "pgnumpy-sweep-0"), "format 'pgnumpy-sweep-0', expected 'pgnumpy-sweep-1'"),
    (("id", 7), "id 7 is not a sweep id"),
    (("id", KeyError), "id None is not a sweep id"),
    (("spec", "ppo"), "spec 'ppo' is not an object"),
    (("spec.seeds", "x"), "spec.seeds 'x' is not an integer >= 1"),
    (("spec.trials", 0), "spec.trials 0 is not an integer >= 1"),
    (("spec.colour", "red"), "spec.colour is no field of a sweep's spec"),
    (("spec.metric", "return"), "holds another sweep (metric: 'return' there, 'steps' here)"),
    (("spec.sample", KeyError), "holds another sweep (sample: None there"),
    (("asked", {}), "asked {} is not a list"),
    (("asked", [{"lr": 0.5}]), "asked[0].lr 0.5 is not a value of the sweep's --grid/--sample"),
    (("asked", [{"lr": "0.005"}]), "asked[0].lr '0.005' is not a value"),
    (("asked", [{"gamma": 0.9}]), "asked[0] {'gamma': 0.9} does not give exactly the fields lr"),
    (("asked", [7]), "asked[0] 7 does not give exactly the fields lr"),
])
def test_a_hand_edited_sweep_json_is_one_line(tmp_path, capsys, edit, message):
    out = tmp_path / "s"
    out.mkdir()
    state = {"format": "pgnumpy-sweep-1", "id": "ab12", "spec": SPEC, "asked": [{"lr": 0.005}]}
    if isinstance(edit, tuple):
        state = _edit(state, *edit)
    if isinstance(edit, list):
        state = edit
    (out / "sweep.json").write_text(edit if isinstance(edit, str) else json.dumps(state))
    assert message in refused(out, BAYES, capsys)


TINY = ["total_steps=512", "num_envs=8", "steps_per_env=32", "hidden=16"]


@pytest.mark.parametrize("record, message", [
    ("{cut short", "is damaged: unreadable"),
    ([], "is damaged: not a JSON object"),
    ({"status": "maybe"}, "status 'maybe' (done or failed)"),
    ({"status": "failed"}, "failed without an error line"),
    ({"status": "done", "solved_steps": None, "solved_s": None, "final_return": "high",
      "env_steps": 512, "wall_s": 1.0}, "final_return 'high' is not a number"),
    ({"status": "done", "solved_steps": 900, "solved_s": 1.0, "final_return": 9.0,
      "env_steps": 512, "wall_s": 1.0}, "its step counts contradict each other"),
    ({"status": "done", "solved_steps": 100, "solved_s": None, "final_return": 9.0,
      "env_steps": 512, "wall_s": 1.0}, "solved_steps and solved_s disagree"),
])
def test_a_hand_edited_trial_json_is_one_line_naming_it(tmp_path, capsys, record, message):
    out = tmp_path / "s"
    args = ["--grid", "lr=1e-3,2e-3", "--set", *TINY]
    rundir.claim(out, "sweep", what="sweep").release()  # a sweep directory of pgnumpy's
    (out / "sweep.json").write_text(json.dumps({
        "format": "pgnumpy-sweep-1", "id": "ab12", "asked": [],
        "spec": {"algo": "ppo", "set": dict(t.split("=") for t in TINY),
                 "grid": {"lr": ["1e-3", "2e-3"]}, "sample": {}, "search": "grid",
                 "search_seed": 0, "metric": "steps", "seeds": 1, "trials": 1}}))
    fixed, _, _ = parse_space("ppo", TINY, [], [])
    run = make_trials("ppo", fixed, {"lr": "2e-3"}, 1, out)[0].run_dir
    run.mkdir(parents=True)
    (run / "trial.json").write_text(record if isinstance(record, str) else json.dumps(record))
    err = refused(out, args, capsys)
    assert f"{run / 'trial.json'} is damaged" in err and message in err, err
    assert "remove it to run that trial again" in err


# ------------------------------------------------------------------ the ranking


def trial(solved: int | None, ret: float, steps: int = 50_000, status: str = "done") -> Trial:
    rec = {"status": status, "solved_steps": solved, "solved_s": None if solved is None else 1.0,
           "final_return": ret, "env_steps": steps if solved is None else max(solved, steps),
           "wall_s": 1.0} if status == "done" else {"status": "failed", "error": "x"}
    return Trial("k", {}, 0, {"algo": "ppo"}, Path("."), record=rec)


def ranked(groups: dict[str, list[Trial]], metric: str = "steps") -> list[str]:
    for name, ts in groups.items():
        for t in ts:
            t.params = {"name": name}
    return [r["name"] for r in summarize(groups, metric)]


def test_unsolved_configurations_rank_by_their_returns_not_their_step_counts():
    """The issue's sweep: nothing solved, and the budgets differ (a higher lr ran fewer steps
    before a run ended, say): ranking by steps used named the worst best."""
    groups = {"worst": [trial(None, 12.0, steps=20_000), trial(None, 15.0, steps=20_000)],
              "middle": [trial(None, 120.0, steps=80_000), trial(None, 100.0, steps=80_000)],
              "best": [trial(None, 300.0, steps=100_000), trial(None, 280.0, steps=100_000)]}
    assert ranked(groups) == ["best", "middle", "worst"]


def test_solved_configurations_first_by_steps_then_unsolved_by_return():
    groups = {"unsolved-high": [trial(None, 470.0), trial(None, 460.0), trial(None, 465.0)],
              "slow": [trial(90_000, 480.0), trial(95_000, 480.0), trial(None, 300.0)],
              "fast": [trial(30_000, 480.0), trial(40_000, 480.0), trial(35_000, 480.0)],
              "one-of-three": [trial(10_000, 490.0), trial(None, 200.0), trial(None, 100.0)],
              "failed": [trial(None, 0.0, status="failed")] * 3}
    # solved: by median steps over the seeds (an unsolved seed counts as never): fast, slow;
    # one-of-three solved once in three, so it is unsolved, ranked by return under the others
    assert ranked(groups) == ["fast", "slow", "unsolved-high", "one-of-three", "failed"]


def test_metric_return_ranks_by_median_final_return():
    groups = {"a": [trial(None, 10.0), trial(None, 500.0), trial(None, 20.0)],
              "b": [trial(10_000, 100.0), trial(None, 90.0), trial(None, 110.0)],
              "nan": [trial(None, float("nan"))]}
    assert ranked(groups, "return") == ["b", "a", "nan"]  # medians 100, 20; no episode last


def test_tpe_is_told_a_value_that_orders_as_the_ranking():
    """TPE uses only the order of its values: for many random configurations, taken in the
    ranking's order, each value must be above the one before exactly when the ranking puts the
    configuration strictly lower (equal when tied)."""
    rng = np.random.default_rng(0)
    for metric in ("steps", "return"):
        groups = {}
        for i in range(200):
            ts = []
            for _ in range(int(rng.integers(1, 4))):
                solved = None if rng.random() < 0.5 else int(rng.integers(1_000, 100_000))
                ts.append(trial(solved, float(rng.normal(100, 200))))
            groups[str(i)] = ts
        ranked(groups, metric)  # names the rows
        rows = summarize(groups, metric)  # best first
        keys = [rank_key(r["score"], r["final_return_mean"], metric) for r in rows]
        values = [tpe_value(groups[r["name"]], metric) for r in rows]
        assert all(math.isfinite(v) for v in values)
        assert all(k[0] == 0 for k in keys)  # every configuration finished
        for (k0, v0), (k1, v1) in zip(zip(keys, values), zip(keys[1:], values[1:])):
            assert (v0 < v1) if k0 < k1 else (v0 == v1), (metric, k0, k1, v0, v1)


def test_bayesian_search_minimizes_what_it_is_told():
    from pgnumpy.sweep.search import BayesSearch
    from pgnumpy.sweep.space import Dist

    d = {"lr": Dist("loguniform", 1e-3, 1e-2)}
    s = BayesSearch({}, d, 4, 0, [({"lr": 2e-3}, 5.0), ({"lr": 4e-3}, 1.0), ({"lr": 8e-3}, 9.0)])
    assert s.study.best_trial.params == {"lr": 4e-3}  # the lowest value is the best


def test_links_in_out_are_refused_not_followed(tmp_path, capsys):
    """OUT/trials or a trial's directory made a symlink by hand would have the trials write
    outside OUT: refused in one line, the link and its target left as they were."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "s"
    rundir.claim(out, "sweep", what="sweep").release()
    (out / "trials").symlink_to(elsewhere)
    args = ["--grid", "lr=1e-3", "--set", *TINY]
    err = refused(out, args, capsys)
    assert f"{out / 'trials'} is not a directory of the sweep's (a symbolic link" in err
    assert list(elsewhere.iterdir()) == []
    (out / "trials").unlink()
    fixed, _, _ = parse_space("ppo", TINY, [], [])
    run = make_trials("ppo", fixed, {"lr": "1e-3"}, 1, out)[0].run_dir
    run.parent.mkdir()
    run.symlink_to(elsewhere)
    err = refused(out, args, capsys)
    assert f"{run} is not a directory of the sweep's" in err and list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["--sample", "lr=uniform:0.1:0.2", "--trials", "100000000"],
    ["--grid", *[f"{f}=1,2,3,4,5,6,7,8,9,10" for f in ("num_envs", "steps_per_env",
                                                        "update_epochs", "minibatches",
                                                        "total_steps", "ent_coef")]],
])
def test_a_slip_of_millions_of_trials_is_one_line_not_a_hang(tmp_path, capsys, args):
    """Every configuration is built and checked up front (~1.5 ms each): 10**8 draws or a
    10**6-point grid would spend hours there before saying anything."""
    assert "more than 100,000 is surely a slip" in refused(tmp_path / "s", args, capsys)


def test_the_help_says_how_configurations_are_ranked_and_how_to_write_layer_widths(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ("steps: solved ones first (solved: on more than half the seeds), by median env steps "
            "to solve; then the unsolved ones by final mean return, highest first") in help_text
    assert "hidden=32x32,64x64 (one-layer networks: hidden=32x,64x)" in help_text


def test_a_trial_holds_its_directory_for_the_whole_task_and_writes_nothing_it_does_not_hold(
        tmp_path):
    """run_trial claims the trial's directory (kind train) before it writes anything, its
    trial.json and error.txt included, and releases the lock however the task ends: a Ray worker
    outlives its task, and a lock it kept would refuse the next sweep's retry of the trial."""
    from pgnumpy.sweep.tasks import run_trial

    (tmp_path / "sweep.json").write_text('{"id": "s1"}')
    config = {"algo": "ppo", **dataclasses.asdict(PPOConfig(
        total_steps=256, num_envs=2, steps_per_env=32, hidden=(8,), target_return=float("inf")))}
    mine = tmp_path / "trials" / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's own")
    record = run_trial("ppo", config, str(mine), "s1")
    assert record["status"] == "failed" and "not a pgnumpy run (notes.txt)" in record["error"]
    assert sorted(os.listdir(mine)) == ["notes.txt"]  # no trial.json, no error.txt, no marker
    ok = tmp_path / "trials" / "ok"
    assert run_trial("ppo", config, str(ok), "s1")["status"] == "done"
    assert rundir.is_claimed(ok, "train") and (ok / "trial.json").exists()
    rundir.claim(ok, "train").release()  # released: this process can take it again
    bad = tmp_path / "trials" / "bad"
    record = run_trial("ppo", {**config, "lr": -1.0}, str(bad), "s1")
    assert record["status"] == "failed" and (bad / "trial.json").exists()
    rundir.claim(bad, "train").release()


def test_a_trial_from_before_a_config_field_was_added_is_found_by_its_config_json(tmp_path):
    """A field pgnumpy adds (sde, say) changes every config's hash; a finished trial an earlier
    pgnumpy ran is still this config's where its config.json lacks only fields at their default
    (train.with_added_defaults, check_config_json's rule), and is reused, not run again."""
    (trial,) = make_trials("ppo", {"env_id": "CartPole-v1"}, {}, 1, tmp_path)
    older = {k: v for k, v in trial.config.items() if k not in ("sde", "sde_sample_freq")}
    found = tmp_path / "trials" / "ppo-0123456789-seed0"  # that config's hash of the time
    found.mkdir(parents=True)
    (found / "config.json").write_text(json.dumps(older))
    other = tmp_path / "trials" / "ppo-9876543210-seed0"  # another config: its lr differs
    other.mkdir()
    (other / "config.json").write_text(json.dumps(older | {"lr": 0.5}))
    (again,) = make_trials("ppo", {"env_id": "CartPole-v1"}, {}, 1, tmp_path)
    assert again.run_dir == found
    # an added field set away from its default is another config: a trial of its own
    (sde,) = make_trials("ppo", {"env_id": "CartPole-v1", "sde": True}, {}, 1, tmp_path)
    assert sde.run_dir not in (found, other) and sde.run_dir.name.endswith("-seed0")
    # and another seed is another trial
    assert make_trials("ppo", {"env_id": "CartPole-v1"}, {}, 2, tmp_path)[1].run_dir != found
