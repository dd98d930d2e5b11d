"""Blind comparison of the base and the candidate (seed P9: 50 comparisons by clinical informatics
physicians).  Each pair shows the same prompt's two notes as A and B in an order drawn at random and
kept from the reviewers; the gate counts the votes once every pair has one.

The gate passes when the candidate is preferred at least as often as the base (ties count for
neither); a pair nobody voted on by the deadline means the review is not done, never that it passed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from careflow.models.model_promotion import BlindVote, ReviewTally


@dataclass(frozen=True)
class Pair:
    pair: int
    prompt: str
    a: str
    b: str


def hidden_order(n: int) -> list[bool]:
    """For each pair, whether the candidate is shown as A (a secret coin, not derivable from ids)."""
    return [bool(secrets.randbits(1)) for _ in range(n)]


def pairs(
    prompts: Sequence[str], base: Sequence[str], candidate: Sequence[str], candidate_is_a: Sequence[bool]
) -> list[Pair]:
    return [
        Pair(i, p, c if first else b, b if first else c)
        for i, (p, b, c, first) in enumerate(zip(prompts, base, candidate, candidate_is_a, strict=True))
    ]


def to_json(ps: Sequence[Pair]) -> bytes:
    return json.dumps([p.__dict__ for p in ps]).encode()


def from_json(data: bytes) -> list[Pair]:
    return [Pair(**row) for row in json.loads(data)]


def tally(votes: Sequence[BlindVote], candidate_is_a: Sequence[bool]) -> ReviewTally:
    """The votes by what they preferred; a reviewer's later vote on a pair replaces the earlier one."""
    last = {(v.reviewer, v.pair): v for v in votes}
    t = ReviewTally(pairs=len(candidate_is_a), voted=len({p for _, p in last}))
    for (_, pair), v in last.items():
        if v.prefer == "same":
            t.same += 1
        elif (v.prefer == "A") == candidate_is_a[pair]:
            t.candidate += 1
        else:
            t.base += 1
    return t


def complete(t: ReviewTally) -> bool:
    return t.pairs > 0 and t.voted == t.pairs


def passes(t: ReviewTally) -> bool:
    return complete(t) and t.candidate >= t.base
