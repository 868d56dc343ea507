"""The audit trail: every mutating API call and every login is recorded (who, role, what,
target, status, request id, client address), and ``GET /api/v1/audit`` (admin) reads it,
newest first, with filters and paging."""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from common import events
from common.errors import ValidationError
from common.redis_client import UNAVAILABLE
from controller import appkeys
from controller.api.errors import REQUEST_ID, error_body, json_response, parse_limit
from controller.api.frontdoor import accepts
from controller.auth import PRINCIPAL, Handler, requires
from controller.store.audit import AuditEntry

logger = logging.getLogger(__name__)
routes = web.RouteTableDef()

AUDITED_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
QUERY: Final = frozenset({"actor", "action", "status", "limit", "before"})
MAX_LIMIT: Final = 1000
SCAN_MAX: Final = 20_000
"""Entries looked at per call when filters match few: the answer says where to go on."""
PAGE: Final = 500


def action_of(request: web.Request) -> str:
    route = request.match_info.route
    template = route.resource.canonical if route.resource is not None else request.path
    return f"{request.method} {template}"


async def record(request: web.Request, status: int) -> None:
    principal = request.get(PRINCIPAL)
    entry = AuditEntry(time=events.now_iso(),
                       actor=principal.name if principal else "anonymous",
                       role=principal.role if principal else None, action=action_of(request),
                       target=dict(request.match_info), status=status,
                       request_id=request.get(REQUEST_ID, ""), address=request.remote or "")
    try:
        await request.app[appkeys.STORE].audit.record(entry)
    except UNAVAILABLE as err:
        logger.warning("audit entry for %s %s not recorded: Redis unreachable (%s)",
                       entry.action, entry.target, type(err).__name__)


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in AUDITED_METHODS:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        await record(request, exc.status)
        raise
    except Exception as err:
        await record(request, error_body(err)[0])
        raise
    await record(request, response.status)
    return response


def _matches(entry: AuditEntry, actor: str | None, action: str | None,
             status: str | None) -> bool:
    if actor is not None and entry.actor != actor:
        return False
    if action is not None and action.lower() not in entry.action.lower():
        return False
    if status is not None:
        shown = str(entry.status)
        return shown[0] == status[0] if status.endswith("xx") else shown == status
    return True


@routes.get("/api/v1/audit")
@requires("admin")
@accepts(*QUERY)
async def list_audit(request: web.Request) -> web.Response:
    query = request.query
    limit = parse_limit(query.get("limit"), MAX_LIMIT)
    status = query.get("status")
    if status is not None and not ((status.isdigit() and len(status) == 3)
                                   or (len(status) == 3 and status[0] in "12345"
                                   and status[1:] == "xx")):
        raise ValidationError("status", "a status such as 403, or a class such as 4xx")
    before = query.get("before")
    if before is not None and not _is_id(before):
        raise ValidationError("before", "an audit entry id, as 'next' gives it")
    trail = request.app[appkeys.STORE].audit
    items: list[AuditEntry] = []
    scanned = 0
    position = before
    while len(items) < limit and scanned < SCAN_MAX:
        page = await trail.page(before=position, count=PAGE)
        if not page:
            position = None
            break
        for entry in page:
            scanned += 1
            position = entry.id
            if _matches(entry, query.get("actor"), query.get("action"), status):
                items.append(entry)
                if len(items) == limit:
                    break
    return json_response({"items": items, "next": position})


def _is_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and seq.isdigit() and len(value) <= 41
