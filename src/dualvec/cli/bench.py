"""`dualvec bench`: the configured stores' search latency and agreement on your own data, the
exact/quantized ladder of a quantized target, and A/A runs."""

from __future__ import annotations

import math

import click

from dualvec.bench import BenchOptions, CollectionBench, bench_collection
from dualvec.bench_quantized import LADDER, NotQuantized, QuantizedBench
from dualvec.bench_queries import MAX_K
from dualvec.bench_runs import Agreement
from dualvec.bench_stats import RecallThresholds
from dualvec.cli.common import (
    chosen_collections,
    collections_option,
    echo_json,
    errors_exit,
    opened_stores,
    settings,
)
from dualvec.compare import CompareThresholds
from dualvec.stores.quantize import MAX_CANDIDATES

__all__ = ["bench"]


def _recall(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        recall = float(value)
    except ValueError:
        recall = math.nan
    if not 0.0 < recall <= 1.0:
        percent = f" ({value} looks like a percentage: use {recall / 100:g})" if 1 < recall <= 100 else ""
        raise click.BadParameter(
            f"{value!r} is not a recall: give the share of the true top-k to find, above 0 and at "
            f"most 1, e.g. --recall 0.95{percent}"
        )
    return recall


def _ladder(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    steps = [part.strip() for part in value.split(",") if part.strip()]
    if not steps or not all(s.isdigit() and 1 <= int(s) <= MAX_CANDIDATES for s in steps):
        raise click.BadParameter(
            f"{value!r}: expected oversample values from 1 to {MAX_CANDIDATES}, comma-separated, "
            f"e.g. {','.join(map(str, LADDER))}"
        )
    return tuple(sorted({int(s) for s in steps}))


def _perturb(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 10.0:
        raise click.BadParameter(f"{value}: expected a noise level from 0 (none) to 10, e.g. 0.1")
    return value


@click.command()
@collections_option
@click.option("--queries", default=200, show_default=True, type=click.IntRange(1, 100_000))
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, MAX_K))
@click.option("--seed", default=0, show_default=True, help="Which records are sampled as queries.")
@click.option(
    "--perturb",
    default=0.0,
    show_default=True,
    callback=_perturb,
    help="Move each query off its record by Gaussian noise of this norm relative to the vector's.",
)
@click.option(
    "--ladder",
    default=",".join(map(str, LADDER)),
    show_default=True,
    callback=_ladder,
    help="oversample settings a quantized target is measured at (its configured one is added).",
)
@click.option(
    "--recall",
    "wanted_recall",
    callback=_recall,
    metavar="R",
    help="Name the smallest oversample whose mean recall@k reaches R (0 < R <= 1) and the "
    "shadow and guard thresholds to set with it.",
)
@click.option("--aa", is_flag=True, help="Also compare each store with itself (the noise floor).")
@click.option(
    "--try-quantize",
    type=click.Choice(["bit", "int8"]),
    default=None,
    help="For an exact target: measure a temporary quantized copy (built in a temp dir, then deleted).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench(
    collections: tuple[str, ...],
    queries: int,
    k: int,
    seed: int,
    perturb: float,
    ladder: tuple[int, ...],
    wanted_recall: float | None,
    aa: bool,
    try_quantize: str | None,
    as_json: bool,
) -> None:
    """Search both stores of each collection with its own records: p50/p95/p99, recall@k and
    the mismatches shadow reads would count. A quantized sqlite-vec target is also measured
    against exact search along an oversample ladder.

    Read-only. Run it before ramping reads to see what the ramp will do to latency, and to set
    shadow.min_recall and the guard's thresholds for an approximate target.
    """
    config = settings()
    names = chosen_collections(config, collections)
    options = BenchOptions(
        queries=queries,
        k=k,
        seed=seed,
        perturb=perturb,
        ladder=ladder,
        wanted_recall=wanted_recall,
        aa=aa,
        try_quantize="bit" if try_quantize == "bit" else "int8" if try_quantize else None,
    )
    results: dict[str, CollectionBench] = {}
    with errors_exit():
        thresholds = CompareThresholds(config.shadow.min_recall, config.shadow.max_distance_delta)
        for name in names:
            with opened_stores(config, name) as stores:
                try:
                    results[name] = bench_collection(
                        stores["legacy"], stores["target"], options, thresholds, config.guard.min_comparisons
                    )
                except ValueError as exc:
                    raise click.ClickException(f"{name}: {exc}") from exc
    if as_json:
        echo_json({"collections": {name: result.as_dict() for name, result in results.items()}})
        return
    for name, result in results.items():
        _print(name, result)


def _ms(latency: dict[str, float]) -> str:
    return "  ".join(f"{q} {v:.2f} ms" for q, v in latency.items())


def _agreement(a: Agreement) -> str:
    return (
        f"{a.mismatches} mismatches of {a.comparisons}, recall mean {a.recall.mean:.4f} "
        f"(sd {a.recall.sd:.4f}, min {a.recall.min:.4f})"
    )


def _print(name: str, result: CollectionBench) -> None:
    stores, sample, limits = result.stores, result.sample, result.thresholds
    perturbed = f", perturbed {sample.perturb:g}" if sample.perturb else ""
    click.echo(
        f"{name}: {stores.queries} queries (random records, seed {sample.seed}{perturbed}; each "
        f"query's own record left out of the answers), k={stores.k}"
    )
    for store, ms in (("legacy", stores.legacy_ms), ("target", stores.target_ms)):
        click.echo(f"  {store:<7} {_ms(ms)}")
    click.echo(f"  target p50 / legacy p50: {stores.target_over_legacy_p50:.2f}")
    click.echo(
        f"  target against legacy at shadow.min_recall={limits.min_recall:g}: "
        f"{_agreement(stores.against_legacy)}"
    )
    click.echo(f"  thresholds for these stores: {_thresholds(stores.advice)}")
    if isinstance(result.quantized, NotQuantized):
        click.echo(f"  quantized: {result.quantized.hint}")
    else:
        _print_ladder(result.quantized, stores.k)
    if result.aa is not None:
        click.echo(
            f"  A/A, each store against itself (shadow.min_recall={limits.min_recall:g}, "
            f"max_distance_delta={limits.max_distance_delta:g}):"
        )
        for role, agreement in result.aa.items():
            click.echo(f"    {role:<7} {_agreement(agreement)}")
        if isinstance(result.quantized, QuantizedBench):
            configured = result.quantized.rung(result.quantized.configured_oversample)
            click.echo(
                f"    target against exact (oversample {configured.oversample}): "
                f"{_agreement(configured.against_exact)}"
            )


def _print_ladder(bench: QuantizedBench, k: int) -> None:
    copy = (
        f" of a temporary copy (built in {bench.copy_seconds:.1f} s)"
        if bench.source == "temporary copy"
        else ""
    )
    click.echo(f"  {bench.layout}{copy}, against exact = {bench.exact_method}:")
    click.echo(
        f"    {'oversample':>10} {'candidates':>10} {'p50 ms':>8} {'p95 ms':>8} "
        f"{f'recall@{k}':>10} {'sd':>7} {'min':>7} {'mismatches':>10}"
    )
    click.echo(
        f"    {'exact':>10} {'all':>10} {bench.exact_ms['p50']:>8.2f} "
        f"{bench.exact_ms['p95']:>8.2f} {1.0:>10.4f}"
    )
    for rung in bench.rungs:
        mark = "*" if rung.oversample == bench.configured_oversample else ""
        recall = rung.against_exact.recall
        click.echo(
            f"    {f'{rung.oversample}{mark}':>10} {rung.candidates:>10} {rung.latency_ms['p50']:>8.2f} "
            f"{rung.latency_ms['p95']:>8.2f} {recall.mean:>10.4f} {recall.sd:>7.4f} {recall.min:>7.4f} "
            f"{rung.against_exact.mismatches:>10}"
        )
    marked = "the target's oversample" if bench.source == "target" else "the default oversample"
    click.echo(f"    (* {marked}; mismatches at the configured shadow thresholds)")
    if bench.wanted_recall is None:
        return
    if bench.reaching is None:
        best = max(bench.rungs, key=lambda r: r.mean_recall)
        tried = ",".join(str(r.oversample) for r in bench.rungs)
        click.echo(
            f"  recall {bench.wanted_recall:g}: no oversample of {tried} "
            f"reaches it (best {best.mean_recall:.4f} at {best.oversample}); try a longer --ladder"
        )
        return
    reaching = bench.reaching
    layout = "" if bench.source == "target" else f"{bench.layout}, "
    click.echo(
        f"  recall {bench.wanted_recall:g}: oversample {reaching.oversample} is the smallest reaching it "
        f"(mean {reaching.mean_recall:.4f}); set {layout}oversample={reaching.oversample}, "
        f"{_thresholds(reaching.thresholds)}"
    )


def _thresholds(advice: RecallThresholds) -> str:
    return (
        f"shadow.min_recall = {advice.shadow_min_recall:g}, guard.min_recall = {advice.guard_min_recall:g}, "
        f"guard.max_mismatch_ratio = {advice.guard_max_mismatch_ratio:g} "
        f"({advice.expected_mismatch_ratio:.1%} of these queries fall below that shadow.min_recall)"
    )
