"""What orchestrators and Prometheus ask: is the process alive, can it serve, what did it see."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from dualvec.service.encoding import json_response
from dualvec.service.models import ErrorResponse
from dualvec.service.state import ServiceDep
from dualvec.settings import Phase

__all__ = ["router"]

router = APIRouter(tags=["health"], responses={503: {"model": ErrorResponse, "description": "Not ready."}})


class Alive(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    collections: dict[str, dict[str, Phase]]


@router.get("/healthz", response_model=Alive, summary="The process answers (no store is touched).")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Ready,
    summary="Every collection's stores are open and its flags read; 503 while starting or stopping.",
)
async def readyz(service: ServiceDep) -> Response:
    routers = service.migration.routers
    collections: dict[str, Any] = {name: {"phase": r.flags.flags.phase.value} for name, r in routers.items()}
    return json_response({"status": "ready", "collections": collections})


@router.get(
    "/metrics",
    summary="Prometheus metrics of every collection.",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
def metrics(service: ServiceDep) -> Response:
    return Response(service.migration.metrics.render(), media_type=CONTENT_TYPE_LATEST)
