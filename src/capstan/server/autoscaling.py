"""``POST /apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects/{name}/explain``: a dry run
of the ScaledObject decision with given metric values (``{"values": {"trigger": 12}}``), computed
with the controllers' core from the object's current state. Nothing is written."""

from __future__ import annotations

import json
import math

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from capstan.api.errors import ApiError, BadRequestError
from capstan.controllers.autoscaling.explain import explain_scaled_object
from capstan.controllers.events import utcnow
from capstan.store.base import Store

EXPLAIN_PATH = "/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects/{name}/explain"


def _values(body: object) -> dict[str, float]:
    raw = body.get("values") if isinstance(body, dict) else None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequestError('"values" must be an object of trigger name -> number')
    values = {}
    for name, value in raw.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BadRequestError(f"value of {name!r} is not a number: {value!r}") from None
        if not math.isfinite(number):
            raise BadRequestError(f"value of {name!r} must be finite")
        values[str(name)] = number
    return values


def explain_routes(store: Store) -> list[Route]:
    async def explain(request: Request) -> Response:
        try:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                raise BadRequestError("the request body is not JSON") from None
            answer = await explain_scaled_object(store, request.path_params["namespace"],
                                                 request.path_params["name"], _values(body), utcnow())
        except ApiError as exc:
            return JSONResponse(exc.to_status(), status_code=exc.code)
        return JSONResponse(answer)

    return [Route(EXPLAIN_PATH, explain, methods=["POST"])]
