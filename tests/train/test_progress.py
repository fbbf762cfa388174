"""What a run prints (issue 9): the schedule, the overall ETA and the validation progress bar."""

import numpy as np
import pytest

from catrec.config import make_config
from catrec.evaluate import evaluate_ranking
from catrec.models import build_model
from catrec.train.progress import eta, format_duration, schedule


def _cfg(**kw):
    return make_config({"dataset": "x", "hidden_size": 8, **kw})


def test_schedule_names_the_warm_up_and_the_first_adversarial_epoch():
    assert schedule(_cfg(mode="cat", epochs=200, adv_warmup_epochs=10)) == (
        "up to 200 epochs; epochs 1-10 standard warm-up, adversarial from 11"
    )
    assert schedule(_cfg(mode="adv", epochs=5, adv_warmup_epochs=0)).endswith(
        "adversarial from epoch 1"
    )
    assert "never adversarial" in schedule(_cfg(mode="cat", epochs=3, adv_warmup_epochs=3))
    assert schedule(_cfg(mode="standard", epochs=7)) == "up to 7 epochs"


def test_eta_is_epochs_left_times_the_recent_whole_epoch_time():
    cfg = _cfg(mode="standard", epochs=10)
    log = [
        {"epoch": e, "epoch_time_s": t} for e, t in [(1, 100.0), (2, 10.0), (3, 20.0), (4, 30.0)]
    ]
    # the last 3 whole epochs: mean 20 s, 6 epochs left -> 120 s (not 6 x the current 30 s)
    assert eta(log, cfg) == "ETA 2m00s for 6 epochs left"
    # an epoch timed only after a resume does not count
    log.append({"epoch": 5, "epoch_time_s": 1.0, "time_partial": True})
    assert eta(log, cfg) == "ETA 1m40s for 5 epochs left"
    assert eta([{"epoch": 9, "epoch_time_s": 5.0}], cfg) == "ETA 5s for 1 epoch left"
    assert eta([{"epoch": 10, "epoch_time_s": 5.0}], cfg) == ""  # nothing left
    warm = _cfg(mode="cat", epochs=10, adv_warmup_epochs=5)
    assert eta(log[:2], warm).endswith("(+ slower adversarial epochs)")
    # after the last warm-up epoch the next one is adversarial: still said
    last_warm = [{"epoch": e, "epoch_time_s": 5.0} for e in range(1, 6)]
    assert eta(last_warm, warm).endswith("(+ slower adversarial epochs)")
    assert "adversarial" not in eta([*last_warm, {"epoch": 6, "epoch_time_s": 9.0}], warm)


@pytest.mark.parametrize(("s", "text"), [(42.4, "42s"), (1868, "31m08s"), (7500, "2h05m")])
def test_format_duration(s, text):
    assert format_duration(s) == text


def test_validation_shows_a_progress_bar(capsys):
    model = build_model(_cfg(model="sasrec", max_len=4, n_heads=1), 20)
    inputs = np.array([[0, 1, 2, 3], [0, 0, 4, 5], [6, 7, 8, 9]])
    targets = np.array([4, 6, 10])
    quiet = evaluate_ranking(model, inputs, targets, batch_size=2)
    assert capsys.readouterr().err == ""
    shown = evaluate_ranking(model, inputs, targets, batch_size=2, progress=True, desc="valid")
    err = capsys.readouterr().err
    assert "valid:" in err and "/3 " in err and "user/s" in err  # a bar over the 3 users
    assert shown == quiet
