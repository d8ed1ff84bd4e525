"""`GET /v2/events`: the fleet's live feed (ORCH-200..204) through the one SSE response.

The admin token sees every task; a client key sees its own tenant's task events. Worker
changes and the 1-second metrics snapshot go to every reader.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestratord.http.tasks import caller_of
from orchestratord.runtime.events_feed import EventsFeed
from shared.sse import KEEPALIVE_S as KEEPALIVE_S  # the interval of the fleet feed
from shared.sse import EventStream


async def fleet_events(request: Request) -> Response:
    feed: EventsFeed = request.state.events
    caller = caller_of(request)
    sub, hello = feed.subscribe(tenant=caller.tenant, admin=caller.sees_all)

    def leave() -> None:
        feed.hub.unsubscribe(sub)

    return EventStream(feed.chunks(sub, hello), on_close=leave, keepalive_s=KEEPALIVE_S)


routes = [Route("/v2/events", fleet_events, methods=["GET"])]
