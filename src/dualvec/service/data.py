"""The data API: each collection's `Router`, over JSON.

Every endpoint is a thin translation: the request model is parsed, vectors decoded, and the
router does the work, with the library's validation, filters, routing, shadow reads, outbox
and metrics, exactly as for a Python caller. Endpoints that touch a store are plain `def`s:
FastAPI runs them in its bounded thread pool, so a slow store never blocks the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from dualvec.errors import ValidationError
from dualvec.records import Record
from dualvec.service.encoding import json_response
from dualvec.service.errors import ApiError
from dualvec.service.export import DEFAULT_PAGE
from dualvec.service.fast_json import JSONRoute
from dualvec.service.models import (
    CollectionsResponse,
    CountResponse,
    DeleteResponse,
    ErrorResponse,
    ExportResponse,
    GetRequest,
    IdsRequest,
    RecordsResponse,
    SearchRequest,
    SearchResponse,
    UpsertRequest,
    UpsertResponse,
)
from dualvec.service.state import Collection, ServiceDep
from dualvec.service.vectors import VectorFormat, record_out, vector_in
from dualvec.spec import CollectionSpec

__all__ = ["router"]

router = APIRouter(
    prefix="/collections",
    tags=["data"],
    route_class=JSONRoute,
    responses={
        status: {"model": ErrorResponse, "description": description}
        for status, description in {
            400: "The body is not JSON.",
            404: "No such collection (the message lists the declared ones).",
            409: "The request names another embedding model than the collection's.",
            413: "The body or the batch is over the service's limit; split it.",
            422: "A field is invalid; `field` names it. Nothing was written.",
            503: "A store failed, or the service is starting or stopping; retry.",
        }.items()
    },
)


def _check_batch(size: int, limit: int, field: str) -> None:
    if size > limit:
        raise ApiError(
            413,
            "PayloadTooLarge",
            f"{field}: {size} items are over this service's batch limit of {limit}; split the batch",
            field,
        )


def _info(spec: CollectionSpec) -> dict[str, object]:
    """What a client needs to know of a collection; store column names stay inside."""
    return {
        "name": spec.name,
        "dim": spec.dim,
        "metric": spec.metric,
        "model": spec.model,
        "id_type": spec.id_type,
        "fields": {
            name: {"type": f.type, "filterable": f.filterable, "optional": f.optional}
            for name, f in spec.fields.items()
        },
    }


@router.get("", response_model=CollectionsResponse, summary="Every declared collection's spec.")
async def list_collections(service: ServiceDep) -> Response:
    routers = service.migration.routers
    return json_response({"collections": {name: _info(r.spec) for name, r in routers.items()}})


@router.post(
    "/{name}/records",
    response_model=UpsertResponse,
    summary="Insert or replace records by id, in both stores as the phase says.",
)
def upsert_records(body: UpsertRequest, collection: Collection, service: ServiceDep) -> Response:
    _check_batch(len(body.records), service.limits.max_batch, "records")
    spec = collection.spec
    records = [
        Record(r.id, vector_in(spec, r.vector, r.vector_b64, f"records[{i}]."), r.metadata)
        for i, r in enumerate(body.records)
    ]
    collection.upsert(records, model=body.model)
    return json_response({"upserted": len(records)})


@router.post(
    "/{name}/search",
    response_model=SearchResponse,
    summary="The k nearest records, closest first, from the store this caller is routed to.",
)
def search(body: SearchRequest, collection: Collection) -> Response:
    vector = vector_in(collection.spec, body.vector, body.vector_b64)
    hits = collection.search(vector, body.k, body.filter, model=body.model, routing_key=body.routing_key)
    return json_response(
        {"hits": [{"id": h.id, "distance": h.distance, "metadata": h.metadata} for h in hits]}
    )


@router.post("/{name}/get", response_model=RecordsResponse, summary="Records by id.")
def get_records(body: GetRequest, collection: Collection, service: ServiceDep) -> Response:
    _check_batch(len(body.ids), service.limits.max_batch, "ids")
    records = collection.get(body.ids, routing_key=body.routing_key)
    return json_response({"records": [record_out(r, body.vector_format) for r in records]})


@router.post("/{name}/delete", response_model=DeleteResponse, summary="Delete records by id.")
def delete_records(body: IdsRequest, collection: Collection, service: ServiceDep) -> Response:
    _check_batch(len(body.ids), service.limits.max_batch, "ids")
    collection.delete(body.ids)
    return json_response({"deleted": len(set(body.ids))})


@router.delete(
    "/{name}/records/{id:path}",
    response_model=DeleteResponse,
    summary="Delete one record (an id may hold '/'; percent-encode what a URL path cannot carry).",
)
def delete_record(id: str, collection: Collection) -> Response:
    try:
        collection.delete([id])
    except ValidationError as exc:
        # The library names the id as the first of a list; here it is the path's `id`.
        message = str(exc).removeprefix("ids[0]: ")
        raise ApiError(422, "ValidationError", f"id: {message}", "id") from exc
    return json_response({"deleted": 1})


@router.get(
    "/{name}/records",
    response_model=ExportResponse,
    summary="Every record, page by page in id order; safe while writes go on (see the description).",
    description=(
        "The first page (no cursor) takes the list of ids the collection's primary store holds; "
        "the export walks it in id order. A record held throughout is returned exactly once, with "
        "its value when its page is read; one deleted before its page is left out; records created "
        "after the first page are not included. Pages may hold fewer than `limit` records while "
        "`next_cursor` is not null; stop when it is null."
    ),
)
def export_records(
    collection: Collection,
    service: ServiceDep,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page; absent to start.")
    ] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, description=f"Records per page: {DEFAULT_PAGE}, or the batch limit if lower."),
    ] = None,
    vector_format: Annotated[VectorFormat, Query(description="numbers or b64.")] = "numbers",
) -> Response:
    most = service.limits.max_batch
    if limit is not None and limit > most:
        raise ApiError(
            422, "ValidationError", f"limit: at most {most} records per page, got {limit}", "limit"
        )
    records, next_cursor = service.exports.page(collection, cursor, limit or min(DEFAULT_PAGE, most))
    return json_response(
        {"records": [record_out(r, vector_format) for r in records], "next_cursor": next_cursor}
    )


@router.get(
    "/{name}/count", response_model=CountResponse, summary="How many records the primary store holds."
)
def count_records(collection: Collection) -> Response:
    return json_response({"count": collection.count()})
