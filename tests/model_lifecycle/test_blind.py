"""The blind comparison (careflow/finetune/blind.py): the pairs keep which side is the candidate only in
the hidden order, the tally reads the votes through it, and the gate needs every pair voted."""

from __future__ import annotations

from careflow.finetune import blind
from careflow.models.model_promotion import BlindVote


def test_pairs_put_the_candidate_where_the_hidden_order_says() -> None:
    ps = blind.pairs(["p0", "p1"], ["base0", "base1"], ["cand0", "cand1"], [True, False])
    assert [(p.a, p.b) for p in ps] == [("cand0", "base0"), ("base1", "cand1")]
    assert blind.from_json(blind.to_json(ps)) == ps


def test_the_hidden_order_is_drawn_not_derived() -> None:
    orders = {tuple(blind.hidden_order(32)) for _ in range(5)}
    assert len(orders) > 1  # a secret coin per pair: two draws of 32 agree with chance 2^-32
    assert all(len(o) == 32 for o in orders)


def test_the_tally_counts_each_reviewers_last_vote_through_the_order() -> None:
    order = [True, False, True]
    votes = [
        BlindVote(reviewer="a", pair=0, prefer="A"),  # candidate
        BlindVote(reviewer="a", pair=1, prefer="A"),  # base ...
        BlindVote(reviewer="a", pair=1, prefer="B"),  # ... changed to the candidate
        BlindVote(reviewer="b", pair=0, prefer="B"),  # base
    ]
    t = blind.tally(votes, order)
    assert (t.pairs, t.voted, t.candidate, t.base, t.same) == (3, 2, 2, 1, 0)
    assert not blind.complete(t) and not blind.passes(t)
    t = blind.tally([*votes, BlindVote(reviewer="a", pair=2, prefer="same")], order)
    assert blind.complete(t) and blind.passes(t)  # 2 for the candidate, 1 for the base, 1 tie
    worse = blind.tally([BlindVote(reviewer="a", pair=i, prefer="B") for i in range(3)], order)
    assert (worse.candidate, worse.base) == (1, 2) and not blind.passes(worse)
    assert not blind.passes(blind.tally([], []))  # nothing to compare never passes
