"""A/A: each store compared with itself on the same queries, scored as shadow reads score.

Before a mismatch ratio can be read as "the stores disagree", it must be known what it is when
nothing can disagree (github/scientist's advice: run control against control first). An exact
store asked the same query twice must give the same ids at the same distances: 0 mismatches and
recall 1.0 under any thresholds. Anything else is the noise floor the shadow comparison starts
from (an index that answers differently from one call to the next). For a quantized target,
the noise floor against exact answers is its recall spread, which `dualvec bench` reports from
the ladder's configured rung beside these.
"""

from __future__ import annotations

from dualvec.bench_queries import Queries
from dualvec.bench_runs import Agreement, agreement, run_interleaved
from dualvec.compare import CompareThresholds
from dualvec.outbox import Role
from dualvec.protocol import VectorStore

__all__ = ["bench_aa"]


def bench_aa(
    stores: dict[Role, VectorStore], queries: Queries, k: int, thresholds: CompareThresholds
) -> dict[Role, Agreement]:
    """Each store's second answer to every query scored against its first."""
    searches = {f"{role} {turn}": store.search for role, store in stores.items() for turn in (1, 2)}
    runs = run_interleaved(searches, queries, k)
    return {role: agreement(runs[f"{role} 1"], runs[f"{role} 2"], k, thresholds) for role in stores}
