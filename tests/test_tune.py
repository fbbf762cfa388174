"""catrec tune: the validation search (issue 11 §1) on a tiny slice of real data."""

import json

import pytest

from catrec.tune import search_space, standard_patience, study_name, tune

TINY = {"hidden_size": 16, "max_len": 10, "epochs": 2, "batch_size": 64, "dropout": 0.2, "lr": 1e-2}


def test_standard_patience_is_read_off_the_log():
    scores = [0.1, 0.2, 0.15, 0.16, 0.17, 0.25, 0.2]
    log = [{"epoch": i + 1, "valid": {"NDCG@10": s}} for i, s in enumerate(scores)]
    # patience 3 stops after epochs 3, 4, 5 bring no gain: best epoch 2
    assert standard_patience(log, 3) == (2, 0.2)
    assert standard_patience(log, 5) == (6, 0.25)


def test_search_space_matches_the_issue():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        t = study.ask()
        v = search_space(t, "cat")
        assert 0.01 <= v["eps"] <= 1 and 0.01 <= v["eps_item"] <= 1
        assert 0.1 <= v["lambda_1"] <= 3 and 0.1 <= v["lambda_2"] <= 3
        assert v["adv_warmup_epochs"] in (0, 5, 10, 20) and v["patience"] in (5, 10)
        assert v["scaling"] in ("proportional", "inverse") and v["shared_dropout"] in (True, False)
        study.tell(t, 0.0)
    adv = search_space(study.ask(), "adv")
    assert set(adv) == {"eps", "lambda_1", "adv_warmup_epochs", "shared_dropout", "patience"}
    # a warm-up that leaves no adversarial epoch is never offered: every trial is adversarial
    short = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    assert {search_space(short.ask(), "cat", epochs=6)["adv_warmup_epochs"] for _ in range(40)} == {
        0,
        5,
    }


def test_adv_and_cat_searches_draw_differently():
    from catrec.tune import sampler_seed

    seeds = {sampler_seed(m, w) for m in ("adv", "cat") for w in range(4)}
    assert len(seeds) == 8


@pytest.mark.slow
def test_tune_runs_resumes_and_never_reads_test(beauty_tiny, tmp_path, monkeypatch):
    def no_test(*a, **k):
        raise AssertionError("tune evaluated a run on the test split")

    monkeypatch.setattr("catrec.train.loop.evaluate_run", no_test)
    base = {"dataset": str(beauty_tiny), "model": "sasrec", **TINY}
    out = tmp_path / "tune"
    result = tune(out, base, ["adv"], n_trials=2, progress=False)
    adv = result["modes"]["adv"]
    assert adv["n_complete"] + adv["n_pruned"] == 2
    assert (out / "study.db").exists() and (out / "standard-seed0" / "log.json").exists()
    assert result["standard"]["chosen_patience"] in (5, 10)
    assert result["standard"]["run_dir"] == "standard-seed0"  # relative to OUT, as the trials'
    for t in adv["trials"]:
        run = json.loads((out / t["run_dir"] / "run.json").read_text())
        assert run["status"] in ("finished", "stopped")
        assert not (out / t["run_dir"] / "metrics.json").exists()
    again = tune(out, base, ["adv"], n_trials=3, progress=False)
    assert len(again["modes"]["adv"]["trials"]) == 3  # resumed: one more trial, not three
    complete = [t for t in again["modes"]["adv"]["trials"] if t["state"] == "COMPLETE"]
    if complete:
        assert again["modes"]["adv"]["best"]["value"] == max(t["value"] for t in complete)


def test_an_interrupted_trial_is_resumed_not_redrawn(beauty_tiny, tmp_path, monkeypatch):
    """A trial stopped by SIGINT / SIGTERM (a session's end) continues in its own folder with its
    own parameters; its epochs so far are reported again, so the pruner sees the whole run."""
    import optuna

    import catrec.train.loop as loop
    from catrec.tune import RESUMES, _storage, prepare_donor, run_trials, study_name

    base = {"dataset": str(beauty_tiny), "model": "sasrec", **TINY, "epochs": 3}
    out = tmp_path / "tune"
    prepare_donor(out, base, progress=False)
    real = loop.Trainer

    class StopsMidEpoch2(real):  # 300 users / batch 64: 5 steps per epoch
        def __init__(self, *a, **k):
            super().__init__(*a, **k, stop_after_steps=7)

    monkeypatch.setattr(loop, "Trainer", StopsMidEpoch2)
    with pytest.raises(loop.Interrupted):
        run_trials(out, base, "adv", 1)
    monkeypatch.setattr(loop, "Trainer", real)
    first_log = json.loads((out / "trials" / "adv-000" / "log.json").read_text())
    assert [r["epoch"] for r in first_log] == [1]
    run_trials(out, base, "adv", 1)

    study = optuna.load_study(study_name=study_name(base, "adv"), storage=_storage(out))
    t0, t1 = study.get_trials()
    assert t0.state == optuna.trial.TrialState.FAIL
    assert t1.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert t1.params == t0.params and t1.user_attrs[RESUMES] == 0
    assert t1.user_attrs["run_dir"] == "trials/adv-000"
    assert not (out / "trials" / "adv-001").exists()
    log = json.loads((out / "trials" / "adv-000" / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2, 3] and log[0] == first_log[0]
    assert t1.intermediate_values == {r["epoch"]: r["valid"]["NDCG@10"] for r in log}
    # continued once: the interrupted trial is not offered again
    from catrec.tune import interrupted_trials

    assert interrupted_trials(study, out) == []


def test_a_continued_search_does_not_replay_the_first_calls_draws(tmp_path):
    # A later call (another session) opens the study with the same worker seed: its random
    # start-up trials must not repeat the earlier call's (they did: adv 0-4 were re-run).
    from catrec.tune import _study

    def draw(n: int) -> list[dict]:
        study = _study(tmp_path, "beauty-sasrec-cat-seed0", 1000)
        params = []
        for _ in range(n):
            trial = study.ask()
            params.append(search_space(trial, "cat", epochs=200))
            study.tell(trial, 0.05)
        return params

    first = draw(3)
    assert draw(3) != first  # the second call: other draws
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    study = _study(fresh, "beauty-sasrec-cat-seed0", 1000)
    trial = study.ask()
    assert search_space(trial, "cat", epochs=200) == first[0]  # a fresh study: the plain seed


def test_a_trial_is_not_pruned_before_five_adversarial_epochs():
    # The median pruner counts steps from epoch 1: a trial with 20 warm-up epochs was pruned
    # after its first adversarial epoch. Now it runs at least PRUNE_AFTER_ADV_EPOCHS of them.
    import optuna

    from catrec.tune import PRUNE_AFTER_ADV_EPOCHS, report_epoch

    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=3),
    )
    done = study.ask()
    for epoch in range(1, 31):
        done.report(0.07, epoch)
    study.tell(done, 0.07)
    trial = study.ask()  # warm-up 20: adversarial from epoch 21, far below the median
    verdicts = [report_epoch(trial, 20 + k, 0.01, k) for k in range(1, 8)]
    assert PRUNE_AFTER_ADV_EPOCHS == 5
    assert verdicts == [False, False, False, False, True, True, True]
    assert trial.should_prune()  # the pruner alone would have cut it at once


@pytest.mark.slow
def test_a_trial_pruned_too_early_runs_again_and_does_not_count(beauty_tiny, tmp_path):
    import optuna

    from catrec.tune import (
        RERUNS,
        _storage,
        counted_trials,
        prepare_donor,
        pruned_early,
        run_trials,
        study_name,
        summarise,
    )

    base = {"dataset": str(beauty_tiny), "model": "sasrec", **TINY, "epochs": 3}
    out = tmp_path / "tune"
    prepare_donor(out, base, progress=False)
    # the search space's distributions, from a throw-away trial
    probe = optuna.create_study().ask()
    params = search_space(probe, "adv", epochs=3) | {"adv_warmup_epochs": 0}
    dists = {k: probe.distributions[k] for k in params}
    study = optuna.create_study(
        study_name=study_name(base, "adv"), storage=_storage(out), direction="maximize"
    )
    pruned = optuna.trial.TrialState.PRUNED
    early = optuna.trial.create_trial(  # pruned after 2 adversarial epochs (warm-up 0)
        params=params, distributions=dists, state=pruned, intermediate_values={1: 0.1, 2: 0.1}
    )
    late = optuna.trial.create_trial(  # after 5: a verdict that counts
        params=params | {"eps": 0.5},
        distributions=dists,
        state=pruned,
        intermediate_values={e: 0.1 for e in range(1, 6)},
    )
    study.add_trial(early)
    study.add_trial(late)
    frozen = study.get_trials()
    assert [pruned_early(t) for t in frozen] == [True, False]
    assert [t.number for t in counted_trials(study)] == [1]

    run_trials(out, base, "adv", 2)  # one more counted trial: the early one's parameters again
    trials = study.get_trials()
    assert len(trials) == 3
    assert trials[2].params == params and trials[2].user_attrs[RERUNS] == 0
    assert trials[2].user_attrs["run_dir"] == "trials/adv-002"
    doc = summarise(out, base, ["adv"])["modes"]["adv"]
    assert (doc["n_pruned_early"], doc["n_complete"] + doc["n_pruned"]) == (1, 2)
    assert [t["pruned_early"] for t in doc["trials"]] == [True, False, False]


def test_a_search_refuses_other_fixed_settings(tmp_path):
    # Continuing a study with another model size would mix trials of two searches in one best.
    import optuna

    from catrec.errors import ConfigError
    from catrec.tune import check_settings

    study = optuna.create_study(study_name="s", direction="maximize")
    base = {"dataset": "beauty", "model": "sasrec", "hidden_size": 16, "epochs": 6}
    check_settings(study, base, "adv", tmp_path)  # first use: recorded
    check_settings(study, base | {"device": "cuda"}, "adv", tmp_path)  # the device may change
    check_settings(study, base | {"dataset": "/data/Beauty.txt"}, "adv", tmp_path)  # the path too
    check_settings(study, base | {"eval_batch_size": 64}, "adv", tmp_path)  # speed only
    with pytest.raises(ConfigError, match=r"epochs: 6 -> 8; hidden_size: 16 -> 8"):
        check_settings(study, base | {"hidden_size": 8, "epochs": 8}, "adv", tmp_path)


def test_the_pruner_compares_a_trial_with_trials_of_its_own_warm_up():
    # At epoch 25 a 20-epoch warm-up trial has run 5 adversarial epochs, a 5-epoch one 20: only
    # the former are its peers (the median of all six would prune the eventual winner's level).
    import optuna
    from optuna.distributions import CategoricalDistribution

    from catrec.tune import warmup_median_pruner

    study = optuna.create_study(direction="maximize", pruner=warmup_median_pruner())
    dist = {"adv_warmup_epochs": CategoricalDistribution([0, 5, 10, 20])}
    for warmup, values in ((5, [0.0700, 0.0702, 0.0705]), (20, [0.0685, 0.0689, 0.0690])):
        for v in values:
            study.add_trial(
                optuna.trial.create_trial(
                    params={"adv_warmup_epochs": warmup},
                    distributions=dist,
                    value=v,
                    intermediate_values={24: v - 0.001, 25: v},
                )
            )

    def verdict(warmup: int, step: int, value: float) -> bool:
        study.enqueue_trial({"adv_warmup_epochs": warmup})
        trial = study.ask()
        trial.suggest_categorical("adv_warmup_epochs", [0, 5, 10, 20])
        trial.report(value, step)
        pruned = trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return pruned

    assert not verdict(20, 25, 0.0689)  # its peers' median; the median of all six is 0.06945
    assert verdict(20, 25, 0.0680)  # below it
    assert not verdict(20, 24, 0.0100)  # only 4 adversarial epochs: never
    assert not verdict(10, 25, 0.0100)  # no completed peers with this warm-up yet
    assert verdict(5, 25, 0.0690)  # a 5-epoch warm-up trial below its own peers
    assert verdict(20, 25, float("nan"))  # nothing but NaN: pruned (as Optuna's pruners do)


@pytest.mark.slow
def test_workers_start_on_a_created_study(beauty_tiny, tmp_path, monkeypatch):
    # Two workers creating the SQLite schema at once failed one of them ("UNIQUE constraint
    # failed: alembic_version"): the parent creates the schema and both studies before any starts.
    import multiprocessing as mp

    import optuna

    out = tmp_path / "tune"
    started = []

    class InProcess:  # runs the worker's target in this process when started, in turn
        exitcode = 0

        def __init__(self, target, args, kwargs):
            self.target, self.args, self.kwargs = target, args, kwargs

        def start(self):
            summaries = optuna.get_all_study_summaries(f"sqlite:///{out}/study.db")
            started.append(sorted(s.study_name for s in summaries))
            self.target(*self.args, **self.kwargs)

        def join(self):
            pass

    class Context:
        Process = InProcess

    monkeypatch.setattr(mp, "get_context", lambda method: Context)
    base = {"dataset": str(beauty_tiny), "model": "sasrec", **TINY}
    result = tune(out, base, ["adv", "cat"], n_trials=1, workers=2, progress=False)
    assert started == [[study_name(base, "adv"), study_name(base, "cat")]] * 2
    for mode in ("adv", "cat"):
        assert result["modes"][mode]["n_complete"] + result["modes"][mode]["n_pruned"] == 1


def test_a_worker_interrupted_before_training_exits_quietly(monkeypatch, capsys):
    # Ctrl-C while a worker still imports torch / optuna: the interrupted status, no traceback
    import catrec.tune as tune_module

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_module, "run_trials", ctrl_c)
    with pytest.raises(SystemExit) as exc:
        tune_module._worker(None, {}, "adv", 1)
    assert exc.value.code == tune_module.INTERRUPTED_EXIT == 130
    assert capsys.readouterr().err == ""
