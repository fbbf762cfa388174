"""Chunked full ranking (catrec.fullrank) gives the ranks of the plain whole-catalogue path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from catrec.evaluate import evaluate_ranking, score_users
from catrec.fullrank import MIN_CHUNK, chunk_bounds, chunked_ranks, plan_chunks, top_k
from catrec.metrics.ranking import NumericalError, ranks_from_scores
from catrec.models.base import SequentialRecommender
from catrec.models.sasrec import SASRec
from catrec.robustness import adversarial_items, topk_and_ranks


class FixedHidden(SequentialRecommender):
    """A model whose hidden state is a fixed row per user (looked up by the last input id, which
    the tests make unique per user) and whose scores are exact small integers: every summation
    order gives the same value, so any chunk width must give the plain ranks, ties included."""

    def __init__(self, hidden: Tensor, table: Tensor) -> None:
        super().__init__(table.shape[0] - 1, table.shape[1], 64)
        self.item_embedding = nn.Embedding.from_pretrained(table, freeze=True)
        self.hidden_rows = hidden  # [U, d], row u for the user whose last id is u + 1

    def encode(self, inputs_embeds: Tensor, padding_mask: Tensor) -> Tensor:
        raise NotImplementedError

    def predict_hidden(self, item_ids: Tensor) -> Tensor:
        return self.hidden_rows[item_ids[:, -1] - 1]


def integer_case(seed: int = 0, n_items: int = 53, users: int = 12):
    """Integer embeddings in -2..2 (many exact ties), histories that end at a unique id."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randint(-2, 3, (n_items + 1, 3), generator=g).float()
    table[0] = 0
    table[7] = table[40]  # duplicated rows: ties across any chunk boundary
    hidden = torch.randint(-2, 3, (users, 3), generator=g).float()
    hist = torch.randint(1, n_items + 1, (users, 5), generator=g)
    hist[:, -1] = torch.arange(1, users + 1)  # the id FixedHidden reads
    hist[0, :3] = 0  # left padding
    targets = torch.randint(1, n_items + 1, (users,), generator=g)
    targets[1] = 7  # tied with item 40 for every user
    targets[2] = hist[2, 1]  # in the history: a masked target, rank inf
    return FixedHidden(hidden, table), hist, targets


def plain_ranks(model, ids, targets, mask_history=True):
    return ranks_from_scores(score_users(model, ids, mask_history), targets)


def test_chunk_bounds_cover_every_column_once_with_equal_widths():
    for n, w in [(54, 7), (54, 54), (54, 100), (54, 1), (1001, 256), (1000, 250)]:
        spans = list(chunk_bounds(n, w))
        assert {hi - lo for lo, _, hi in spans} == {min(w, n)}  # one width: one BLAS kernel
        counted = [c for _, new, hi in spans for c in range(new, hi)]
        assert counted == list(range(n))


def test_plan_chunks_bounds_users_times_items():
    assert plan_chunks(1024, 12_000, 1 << 25).width == 12_000  # small catalogue: one chunk
    p = plan_chunks(1024, 1_000_001, 1 << 25)  # CPU: cache-sized chunks of 2**20 scores
    assert p.users == 1024 and p.width == 1024
    p = plan_chunks(1024, 1_000_001, 1 << 25, device="cuda")  # GPU: the whole budget
    assert p.users == 1024 and p.width == 32_768 and p.elements <= 1 << 25
    assert plan_chunks(256, 1_000_001, 1 << 25).width == 4096
    p = plan_chunks(1024, 1_000_001, 1 << 16)
    assert p.width == MIN_CHUNK and p.users * p.width <= 1 << 16
    with pytest.raises(ValueError):
        plan_chunks(0, 10)


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 13, 53, 54, 60])
@pytest.mark.parametrize("mask_history", [True, False])
def test_integer_scores_any_width_identical_ranks_and_ties(width, mask_history):
    model, ids, targets = integer_case()
    want = plain_ranks(model, ids, targets, mask_history)
    got, top = chunked_ranks(model, ids, targets, width, mask_history=mask_history, depth=5)
    assert torch.equal(got, want)
    if mask_history:
        assert got[2] == math.inf
    # item 40 ties with target 7 and counts against it (pessimistic rank)
    scores = score_users(model, ids, mask_history)
    assert want[1] == 1 + (scores[1] > scores[1, 7]).sum() + (scores[1] == scores[1, 7]).sum() - 1
    # the top lists are top_k's of the whole row, exact ties included (listed by item index)
    assert bool(((scores >= scores.gather(1, top[:, -1:])).sum(1) > 5).any())  # a tie at 5th place
    assert torch.equal(top, top_k(scores, 5)[0])


@pytest.mark.parametrize("width", [3, 7, 54])
def test_nan_scores_raise_unless_masked(width):
    model, ids, targets = integer_case()
    with torch.no_grad():
        model.item_embedding.weight[30, 0] = float("nan")
    ids = ids.clone()
    ids[:, 0] = torch.where(ids[:, 0] == 0, 30, ids[:, 0])  # item 30 in some histories only
    with pytest.raises(NumericalError):
        plain_ranks(model, ids, targets)
    with pytest.raises(NumericalError):
        chunked_ranks(model, ids, targets, width)
    ids[:, 1] = 30  # now in every history: masked in both paths, no NaN is ranked
    assert torch.equal(
        chunked_ranks(model, ids, targets, width)[0], plain_ranks(model, ids, targets)
    )


def test_nan_hidden_state_raises():
    model, ids, targets = integer_case()
    model.hidden_rows[4, 1] = float("nan")
    with pytest.raises(NumericalError):
        chunked_ranks(model, ids, targets, 7)


def sasrec_case(n_items=1501, users=300, seed=0):
    torch.manual_seed(seed)
    model = SASRec(n_items, hidden_size=16, max_len=12, n_layers=1, n_heads=2, dropout=0.0)
    with torch.no_grad():
        model.item_embedding.weight[1:].normal_(0, 0.5)
        model.item_embedding.weight[900] = model.item_embedding.weight[77]  # exact ties
    model.eval()
    rng = np.random.default_rng(seed)
    inputs = rng.integers(1, n_items + 1, size=(users, 12))
    for u, n in enumerate(rng.integers(1, 13, size=users)):
        inputs[u, : 12 - n] = 0
    targets = rng.integers(1, n_items + 1, size=users)
    targets[:20] = 77
    targets[20:40] = 900
    targets[40] = inputs[40, -1]  # masked
    return model, inputs, targets


@pytest.mark.parametrize("width", [MIN_CHUNK, 300, 777, 1502])
def test_sasrec_chunked_ranks_identical_to_plain(width):
    """A real model with float scores: chunks of one width reproduce the plain product exactly
    (the width does not divide the 1,502 columns, except the single-chunk case)."""
    model, inputs, targets = sasrec_case()
    for rows in (slice(0, 64), slice(64, 300)):  # batches of 64 and 236 users
        ids = torch.as_tensor(inputs[rows])
        y = torch.as_tensor(targets[rows])
        want = plain_ranks(model, ids, y)
        got, _ = chunked_ranks(model, ids, y, width)
        assert torch.equal(got, want)


def test_evaluate_ranking_with_a_small_budget_equals_plain():
    model, inputs, targets = sasrec_case()
    plain = evaluate_ranking(model, inputs, targets, batch_size=64)
    for budget in (64 * 300, 64 * MIN_CHUNK, 64 * 1000):
        assert evaluate_ranking(model, inputs, targets, batch_size=64, max_scores=budget) == plain


def test_robustness_topk_and_adversarial_search_chunked():
    model, inputs, targets = sasrec_case(users=120)
    top, ranks = topk_and_ranks(model, inputs, targets, 10, batch_size=60)
    top_c, ranks_c = topk_and_ranks(model, inputs, targets, 10, batch_size=60, max_scores=60 * 400)
    assert np.array_equal(ranks, ranks_c)
    assert np.array_equal(top, top_c)  # no exact ties among the top 10 of this model
    cols = np.full((len(targets), 1), inputs.shape[1] - 1)
    plain = adversarial_items(model, inputs, targets, cols, batch_size=60)
    chunked = adversarial_items(model, inputs, targets, cols, batch_size=60, max_scores=60 * 400)
    assert np.mean(plain == chunked) > 0.95  # same search; the gradient is summed in another order
    assert (chunked > 0).all()


def test_a_wrong_first_guess_of_the_target_score_is_corrected(monkeypatch):
    """The count is redone with the chunk's own target scores when the first guess differs."""
    import catrec.fullrank as fr

    model, inputs, targets = sasrec_case()
    ids, y = torch.as_tensor(inputs[:64]), torch.as_tensor(targets[:64])
    want = plain_ranks(model, ids, y)
    guess = fr._guess_target_scores
    off = lambda h, table, t: torch.nextafter(guess(h, table, t), torch.tensor(math.inf))  # noqa: E731
    monkeypatch.setattr(fr, "_guess_target_scores", off)
    assert torch.equal(chunked_ranks(model, ids, y, 300)[0], want)
