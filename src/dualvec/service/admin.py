"""The admin API: what `dualvec --server URL COMMAND` asks a running service, behind the admin
token. Every answer is what the local command prints with `--json`, worked out on the stores
and outbox this service holds open:

- `GET /admin/status[?collection=NAME...]`: `dualvec status --json`.
- `GET /admin/flags[?collection=NAME]`, `POST /admin/flags` (`{"collection"?, "changes": {KEY:
  VALUE}, "force"?}`), `POST /admin/rollback` (`{"collection"?}`): `{"collections": {NAME:
  {phase, read_percent, shadow_percent, sources}}}`, through `dualvec.phases`, so the same rules
  apply; a change they refuse is 409 with their message, and writes nothing.
- `POST /admin/replay` (`{"collections"?, "batch_size"?}`): `{"collections": {NAME: {upserted,
  deleted, failed, remaining}}}`.
- `POST /admin/jobs` (`{"kind": "backfill"|"verify", "collections"?, options}`): 202 and the job;
  `GET /admin/jobs/{id}`: its state, progress per collection, result and error (`jobs`).
- `POST /admin/ramps` (`{"collection", "steps", "interval"?, "dry_run"?, "prometheus"?, "job"?,
  "guard"?: {KEY: VALUE}}`): 202 and the ramp run (`dualvec.guard.runs`), on this service's own
  metrics or the Prometheus named; `GET /admin/ramps/{id}`: its state, events and summary;
  `DELETE /admin/ramps/{id}`: stop it where it stands.

An unknown collection is 404 naming the declared ones.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from dualvec.errors import ConfigError, DualvecError
from dualvec.flags import FLAG_KEYS, FlagSnapshot, flags_report
from dualvec.guard.ramp import PhaseRulesControl, RampPlan, parse_steps
from dualvec.guard.runs import RampRun, RampRuns
from dualvec.guard.sources import ExpositionSource, PrometheusSource, SignalSource
from dualvec.outbox import Role
from dualvec.phases import change_flags, collection_flags, copy_problem, rollback_flags
from dualvec.progress import DEFAULT_BATCH_SIZE
from dualvec.replay import replay_until_drained
from dualvec.router import Router
from dualvec.service.auth import require_admin
from dualvec.service.encoding import json_response
from dualvec.service.errors import ApiError
from dualvec.service.jobs import JobKind, backfill_job, verify_job
from dualvec.service.models import ErrorResponse
from dualvec.service.state import Service, ServiceDep
from dualvec.settings import Duration, GuardSettings, Phase
from dualvec.spec import describe

__all__ = ["router"]

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong admin token."},
        404: {
            "model": ErrorResponse,
            "description": "Unknown collection (the message lists the declared ones).",
        },
    },
)
_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "Refused by the phase rules; nothing was written."}
}


class StoreStatus(BaseModel):
    url: str
    count: int | str  # the count, or why it could not be read


class OutboxStatus(BaseModel):
    depth: int
    oldest_age_seconds: float


class CollectionStatus(BaseModel):
    phase: Phase
    read_percent: float
    shadow_percent: float
    sources: dict[str, str]
    legacy: StoreStatus
    target: StoreStatus
    outbox: OutboxStatus


class StatusResponse(BaseModel):
    collections: dict[str, CollectionStatus]


def _count(router: Router, role: Role) -> int | str:
    try:
        return router.stores[role].count()
    except DualvecError as exc:
        return f"unavailable: {exc}"


def _status(router: Router, urls: tuple[str, str]) -> dict[str, Any]:
    snapshot = router.flags
    stats = router.outbox.stats()
    return {
        **snapshot.flags.model_dump(mode="json"),
        "sources": dict(snapshot.sources),
        "legacy": {"url": urls[0], "count": _count(router, "legacy")},
        "target": {"url": urls[1], "count": _count(router, "target")},
        "outbox": {"depth": stats.depth, "oldest_age_seconds": round(stats.oldest_age_seconds, 3)},
    }


@router.get(
    "/status",
    response_model=StatusResponse,
    summary="Each collection's flags and their sources, record counts per store, outbox depth and age.",
)
def admin_status(
    service: ServiceDep,
    collection: Annotated[list[str] | None, Query(description="Declared collections; default: all.")] = None,
) -> Response:
    migration = service.migration
    settings = migration.settings
    names = _chosen(service, collection, "collection")
    collections = {name: _status(migration.routers[name], settings.urls(name)) for name in names}
    return json_response({"collections": collections})


def _chosen(service: Service, names: list[str] | None, field: str) -> list[str]:
    """The collections a request names, else every declared one; 404 naming the declared ones."""
    for name in names or []:
        try:
            service.router(name)
        except ApiError as exc:
            exc.field = field
            raise
    return list(dict.fromkeys(names or [])) or list(service.migration.routers)


def _refused(exc: ConfigError) -> ApiError:
    return ApiError(409, type(exc).__name__, str(exc))


def _flags_answer(snapshots: dict[str, FlagSnapshot], collection: str | None) -> Response:
    selected = snapshots if collection is None else {collection: snapshots[collection]}
    return json_response(flags_report(selected))


class FlagsResponse(BaseModel):
    collections: dict[str, dict[str, Any]]


class FlagsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="One declared collection; default: every collection.")
    changes: dict[str, Any] = Field(
        min_length=1, description=f"Flag key to value; keys: {', '.join(FLAG_KEYS)}."
    )
    force: bool = Field(False, description="Skip the phase rules.")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="One declared collection; default: every collection.")


@router.get("/flags", response_model=FlagsResponse, summary="Each collection's flags and their sources.")
def admin_flags_show(
    service: ServiceDep,
    collection: Annotated[str | None, Query(description="One declared collection; default: all.")] = None,
) -> Response:
    settings = service.migration.settings
    names = _chosen(service, [collection] if collection else None, "collection")
    return json_response(flags_report({name: collection_flags(settings, name) for name in names}))


@router.post(
    "/flags",
    response_model=FlagsResponse,
    responses=_REFUSED,
    summary="Change flags through the phase rules (dualvec flags set).",
)
def admin_flags_set(service: ServiceDep, body: FlagsRequest) -> Response:
    if body.collection is not None:
        _chosen(service, [body.collection], "collection")
    unknown = sorted(set(body.changes) - set(FLAG_KEYS))
    if unknown:
        raise ApiError(
            422, "ValidationError", f"unknown flag(s) {unknown}; flags are {list(FLAG_KEYS)}", "changes"
        )
    try:
        snapshots = change_flags(
            service.migration.settings, body.changes, collection=body.collection, force=body.force
        )
    except ConfigError as exc:
        raise _refused(exc) from exc
    return _flags_answer(snapshots, body.collection)


@router.post(
    "/rollback",
    response_model=FlagsResponse,
    responses=_REFUSED,
    summary="Serve every read from legacy again (dualvec rollback).",
)
def admin_rollback(service: ServiceDep, body: RollbackRequest) -> Response:
    if body.collection is not None:
        _chosen(service, [body.collection], "collection")
    try:
        snapshots = rollback_flags(service.migration.settings, body.collection)
    except ConfigError as exc:
        raise _refused(exc) from exc
    return _flags_answer(snapshots, body.collection)


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collections: list[str] | None = Field(None, description="Declared collections; default: all.")
    batch_size: int = Field(500, ge=1, le=100_000)


class ReplayCounts(BaseModel):
    upserted: int
    deleted: int
    failed: int
    remaining: int


class ReplayResponse(BaseModel):
    collections: dict[str, ReplayCounts]


@router.post(
    "/replay",
    response_model=ReplayResponse,
    summary="Repair every id waiting in the outbox from the primary (dualvec replay).",
)
def admin_replay(service: ServiceDep, body: ReplayRequest) -> Response:
    names = _chosen(service, body.collections, "collections")
    summary: dict[str, dict[str, int]] = {}
    for name in names:
        router = service.migration.routers[name]
        total = replay_until_drained(router.outbox, router.stores, body.batch_size)
        summary[name] = {
            "upserted": total.upserted,
            "deleted": total.deleted,
            "failed": total.failed,
            "remaining": router.outbox.stats().depth,
        }
    return json_response({"collections": summary})


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    collections: list[str] | None = Field(None, description="Declared collections; default: all.")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=100_000)
    restart: bool = Field(False, description="Ignore the checkpoint and start from the beginning.")
    force: bool = Field(False, description="backfill: run whatever the phase.")
    repair: bool = Field(False, description="verify: make the secondary equal to the primary, then verify.")
    sample: int = Field(5, ge=0, le=1000, description="verify: ids shown per kind of difference.")
    tolerance: float = Field(1e-6, ge=0, le=1, description="verify: vectors closer than this are equal.")


class JobProgress(BaseModel):
    done: int
    total: int
    elapsed: float
    resumed: int
    rate: float


class JobResponse(BaseModel):
    id: str
    kind: JobKind
    collections: list[str]
    state: Literal["running", "done", "failed"]
    progress: dict[str, JobProgress]
    result: dict[str, Any] | None = Field(
        description="What `dualvec backfill|verify --json` prints, once done."
    )
    error: dict[str, Any] | None = Field(description="Once failed: {type, message, field}.")
    started_at: float
    finished_at: float | None


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobResponse,
    responses=_REFUSED,
    summary="Start a backfill or a verify in the background; poll GET /admin/jobs/{id}.",
)
def admin_submit_job(service: ServiceDep, body: JobRequest) -> Response:
    migration = service.migration
    names = _chosen(service, body.collections, "collections")
    running = service.jobs.busy(body.kind, names)
    if running is not None:
        raise ApiError(
            409,
            "Conflict",
            f"{body.kind} job {running.id} is still running over {running.collections}; wait for it",
            "collections",
        )
    if body.kind == "backfill":
        if not body.force:
            problems = [
                problem for name in names if (problem := copy_problem(migration.settings, name, "backfill"))
            ]
            if problems:
                raise ApiError(409, "ConfigError", "; ".join(problems))
        work = backfill_job(migration, names, batch_size=body.batch_size, restart=body.restart)
    else:
        work = verify_job(
            migration,
            names,
            repair=body.repair,
            sample=body.sample,
            tolerance=body.tolerance,
            batch_size=body.batch_size,
            restart=body.restart,
        )
    job = service.jobs.start(body.kind, names, work)
    return json_response(job.as_dict(), status=202)


@router.get(
    "/jobs/{job_id}", response_model=JobResponse, summary="A job's state, progress, result and error."
)
def admin_job(service: ServiceDep, job_id: str) -> Response:
    job = service.jobs.get(job_id)
    if job is None:
        raise ApiError(
            404, "NotFound", f"no job {job_id[:40]!r} (jobs are kept until the service stops)", "job_id"
        )
    return json_response(job.as_dict())


class RampRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str = Field(description="The declared collection to ramp.")
    steps: list[float] = Field(min_length=1, description="Rising read_percent steps in (0, 100].")
    interval: Duration | None = Field(
        None, description='Seconds, or "30s", "5m", between steps; default: [guard] interval.'
    )
    dry_run: bool = Field(False, description="Evaluate and report every interval; change no flag.")
    prometheus: str | None = Field(
        None,
        description="Read the signals from this Prometheus (the fleet), not this service's own metrics.",
    )
    job: str | None = Field(None, description="With prometheus: only this scrape job's processes.")
    guard: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the [guard] thresholds for this ramp."
    )


class RampResponse(BaseModel):
    id: str
    collection: str
    state: Literal["running", "completed", "rolled_back", "stopped", "failed"]
    events: list[dict[str, Any]] = Field(description="What the ramp reported so far, oldest first.")
    result: dict[str, Any] | None = Field(description="What `dualvec ramp --json` prints, once finished.")
    error: dict[str, Any] | None = Field(description="Once failed: {type, message, field}.")
    started_at: float
    finished_at: float | None


def _ramps(request: Request) -> RampRuns:
    return cast(RampRuns, request.app.state.ramps)


def _ramp_plan(body: RampRequest, defaults: GuardSettings) -> RampPlan:
    try:
        steps = parse_steps(",".join(f"{step:g}" for step in body.steps))
    except ValueError as exc:
        raise ApiError(422, "ValidationError", str(exc), "steps") from exc
    try:
        guard = GuardSettings.model_validate({**defaults.model_dump(), **body.guard})
    except PydanticValidationError as exc:
        raise ApiError(422, "ValidationError", f"guard: {describe(exc)}", "guard") from exc
    interval = body.interval if body.interval is not None else guard.interval
    return RampPlan(body.collection, steps, interval, guard, dry_run=body.dry_run)


def _ramp_answer(run: RampRun, status: int = 200) -> Response:
    return json_response(run.as_dict(), status=status)


@router.post(
    "/ramps",
    status_code=202,
    response_model=RampResponse,
    responses=_REFUSED,
    summary="Ramp a collection's read_percent step by step under the guard (dualvec ramp).",
)
def admin_start_ramp(service: ServiceDep, request: Request, body: RampRequest) -> Response:
    _chosen(service, [body.collection], "collection")
    migration = service.migration
    plan = _ramp_plan(body, migration.settings.guard)
    if body.prometheus is not None and not body.prometheus.startswith(("http://", "https://")):
        raise ApiError(
            422,
            "ValidationError",
            f"prometheus must be an http(s) URL, got {body.prometheus!r}",
            "prometheus",
        )
    source: SignalSource = (
        ExpositionSource.of_metrics(migration.metrics)
        if body.prometheus is None
        else PrometheusSource(body.prometheus, body.job)
    )
    control = PhaseRulesControl(migration.settings, body.collection)
    try:
        run = _ramps(request).start(plan, control, source, migration.metrics.collection(body.collection))
    except ConfigError as exc:
        raise _refused(exc) from exc
    return _ramp_answer(run, status=202)


def _found(run_id: str, run: RampRun | None) -> RampRun:
    if run is None:
        raise ApiError(
            404, "NotFound", f"no ramp {run_id[:40]!r} (ramps are kept until the service stops)", "ramp_id"
        )
    return run


@router.get("/ramps/{ramp_id}", response_model=RampResponse, summary="A ramp's state, events and summary.")
def admin_ramp(request: Request, ramp_id: str) -> Response:
    return _ramp_answer(_found(ramp_id, _ramps(request).get(ramp_id)))


@router.delete(
    "/ramps/{ramp_id}",
    response_model=RampResponse,
    summary="Stop a ramp where it stands (its flags stay as they are).",
)
def admin_stop_ramp(request: Request, ramp_id: str) -> Response:
    return _ramp_answer(_found(ramp_id, _ramps(request).stop(ramp_id)))
