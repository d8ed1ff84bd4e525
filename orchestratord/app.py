"""orchestratord's composition root: the lifespan that owns all runtime state, and the app.

Layers (imports only point down; tests/orchestratord/test_layout.py checks it):
    http/           routes: parse, authorise, call the service, render
    runtime/        async adapters: the service (client API), dispatch loop, runners, readers
    worker_client/  the HTTP client side of the worker protocol (relay, embeddings)
    store/          the database (SQLAlchemy) and its batch writer
    fleet/          the fleet controller: desired state, plan hook, actions
    policy/         the Starlark policy engine (admit, schedule, plan)
    domain/         the pure core: tasks, queue, registry, scheduling, reservations, views

Everything with runtime state (task service, database, policy, metrics, HTTP client) is made in
the lifespan and reaches handlers as `request.state.*`; nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from orchestratord.domain.compare import Target
from orchestratord.fleet.control import FleetControl
from orchestratord.fleet.desired import FleetSpec, load_fleet_file, parse_fleet
from orchestratord.fleet.plan_hook import PlanHook
from orchestratord.http import (
    admin,
    audit,
    compare,
    console,
    events,
    fleet,
    keys,
    meta,
    openai,
    openai_responses,
    tasks,
    tenants,
    workers,
)
from orchestratord.http.auth import OrchestratorAuth
from orchestratord.http.errors import error_response
from orchestratord.metrics import Metrics, MetricsPolicyObserver
from orchestratord.policy import PolicyEngine, PolicyError, PolicyHolder
from orchestratord.runtime.audit import AuditLog
from orchestratord.runtime.compare_service import CompareService
from orchestratord.runtime.events_feed import EventsFeed
from orchestratord.runtime.fleet import ServiceFleetSource
from orchestratord.runtime.janitor import prune_loop
from orchestratord.runtime.keys import KeyRing, StoredKey
from orchestratord.runtime.service import TaskService
from orchestratord.settings import Settings
from orchestratord.store import admin as admin_store
from orchestratord.store.db import BatchWriter, Store
from shared.heap import freeze_startup_heap
from shared.limits import BodyLimit
from shared.problem import InvalidParams, install_problem_handlers

log = logging.getLogger("llorch.orchestratord")


def _routes() -> list[BaseRoute]:
    return [
        *tasks.routes,
        *meta.routes,
        *fleet.routes,
        *workers.routes,
        *admin.routes,
        *keys.routes,
        *audit.routes,
        *openai.routes,
        *openai_responses.routes,
        *events.routes,
        *compare.routes,
        *tenants.routes,
        *console.routes,
    ]


def _events_feed(
    service: TaskService, policy: PolicyHolder, metrics: Metrics, settings: Settings
) -> EventsFeed:
    """The fleet feed, reading the live objects (ORCH-200..204)."""

    def policy_info() -> dict[str, Any]:
        engine = policy.engine
        fallbacks = sum(
            s.value
            for family in metrics.policy_fallbacks.collect()
            for s in family.samples
            if s.name.endswith("_total")
        )
        return {"name": engine.name, "sha256": engine.sha256, "fallbacks": int(fallbacks)}

    feed = EventsFeed(
        clock=service.clock,
        workers=lambda: service.registry.listings(service.clock()),
        queued=lambda: service.queue,
        token_totals=lambda: {w.id: w.tokens_relayed for w in service.registry.workers.values()},
        policy=policy_info,
        buffer=settings.events_buffer,
        cache_index=service.registry.kv.stats,
    )
    service.observers.append(feed.task_changed)
    return feed


def _serves(service: TaskService) -> Callable[[Target, str], bool]:
    """Whether a compare target (a worker, or any worker of a pool) serves a model now."""

    def serves(target: Target, model: str) -> bool:
        now = service.clock()
        return any(
            w.model == model
            and (w.id == target.name if target.kind == "worker" else w.pool == target.name)
            and w.state(now, service.registry.stale_ms) not in ("dead", "failed")
            for w in service.registry.workers.values()
        )

    return serves


def create_app(settings: Settings, *, handle_sighup: bool = False) -> Starlette:
    """The ASGI app. Nothing is opened until the lifespan starts."""
    # The stored keys: the auth middleware reads them, the lifespan loads them (ORCH-300).
    ring = KeyRing()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Each resource is closed by the stack, in reverse order, however start-up or the
        # run ends: a start-up that fails half way leaks nothing.
        async with contextlib.AsyncExitStack() as stack:
            openapi = await asyncio.to_thread(meta.openapi_document)
            m = Metrics(settings.metrics_tenant_labels)
            observer = MetricsPolicyObserver(m)
            policy = PolicyHolder(
                await asyncio.to_thread(
                    PolicyEngine.from_file,
                    settings.policy,
                    budget_ms=settings.policy_budget_ms,
                    observer=observer,
                )
            )
            store = Store(settings.database_url)
            await asyncio.to_thread(store.open)
            stack.callback(store.close)
            fleet_control = FleetControl(
                await asyncio.to_thread(_initial_fleet, store, settings.fleet),
                PlanHook.following(policy),
                path=settings.fleet,
            )
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    settings.read_timeout_s, connect=settings.connect_timeout_s, pool=None
                ),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
                trust_env=False,
            )
            stack.push_async_callback(client.aclose)
            writer = BatchWriter(store)
            service = TaskService(
                settings, policy=policy, metrics=m, client=client, store=store, writer=writer
            )
            service.fleet_models = lambda: fleet_control.model_ids
            failed = await asyncio.to_thread(store.fail_unfinished, service.clock())
            if failed:
                log.warning(
                    "%d task(s) left unfinished by the last run marked WORKER_RESET", failed
                )
            service.registry.restore(await asyncio.to_thread(store.load_workers))
            stored = await asyncio.to_thread(admin_store.load_keys, store)
            ring.load(StoredKey(**row) for row in stored)
            audit_log = AuditLog(store, service.clock, ring)
            audit_log.start()
            stack.push_async_callback(audit_log.close)
            writer.start()
            stack.push_async_callback(writer.close)
            # Limits and the budgets' spent tokens before the first task; usage is written
            # after the service stops, its last tasks included (ORCH-324).
            await service.tenants.load()
            service.tenants.start()
            stack.push_async_callback(service.tenants.close)
            service.start()
            stack.push_async_callback(service.stop)
            janitor = asyncio.create_task(
                prune_loop(store, service.clock, settings.retain_finished_s), name="prune"
            )
            stack.push_async_callback(_cancel_and_wait, janitor)
            feed = _events_feed(service, policy, m, settings)
            feed.start()
            stack.push_async_callback(feed.stop)
            runs = CompareService(service, store, clock=service.clock, serves=_serves(service))
            recovered = await runs.recover()
            if recovered:
                log.warning("%d compare run(s) left running by the last run saved", recovered)
            stack.push_async_callback(runs.stop)
            if handle_sighup and threading.current_thread() is threading.main_thread():
                loop = asyncio.get_running_loop()
                reloads: set[asyncio.Task[None]] = set()

                def on_sighup() -> None:
                    # Compiling and dry-running a policy takes a while: off the event loop.
                    task = loop.create_task(
                        _audited_sighup(policy, fleet_control, audit_log, store)
                    )
                    reloads.add(task)
                    task.add_done_callback(reloads.discard)

                loop.add_signal_handler(signal.SIGHUP, on_sighup)
                stack.callback(loop.remove_signal_handler, signal.SIGHUP)
            app.state.service = service  # for the server's shutdown hook (orchestratord.__main__)
            freeze_startup_heap()
            yield {
                "service": service,
                "metrics": m,
                "policy": policy,
                "settings": settings,
                "store": store,
                "fleet": fleet_control,
                "fleet_source": ServiceFleetSource(service),
                "events": feed,
                "compare": runs,
                "openapi": openapi,
                "keys": ring,
                "audit": audit_log,
            }

    app = Starlette(routes=_routes(), lifespan=lifespan)
    install_problem_handlers(app, render=error_response)
    app.add_middleware(BodyLimit, render=error_response)
    app.add_middleware(
        OrchestratorAuth,
        key_tenants=settings.key_tenants,
        cluster_token=settings.cluster_token,
        admin_token=settings.admin_token,
        stored_keys=ring,
    )
    return app


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _audited_sighup(
    policy: PolicyHolder, fleet_control: FleetControl, audit_log: AuditLog, store: Store
) -> None:
    """A SIGHUP reload is an admin action too: recorded as `sighup` (ORCH-306)."""
    before = {"policy": policy.engine.sha256, "fleet": fleet_control.spec.to_json()}
    await asyncio.to_thread(_reload_on_sighup, policy, fleet_control, store)
    after = {"policy": policy.engine.sha256, "fleet": fleet_control.spec.to_json()}
    audit_log.record("sighup", "reload", "policy+fleet", before=before, after=after)


def _initial_fleet(store: Store, seed: Path | None) -> FleetSpec:
    """The stored desired state; else the `--fleet` file, stored as the first (FLT-080)."""
    stored = store.load_fleet()
    if stored is not None:
        try:
            return parse_fleet(stored)
        except InvalidParams as e:
            log.error("the stored fleet does not validate (%s); using the seed", e.detail)
    spec = load_fleet_file(seed) if seed else FleetSpec()
    if seed:
        store.save_fleet(spec.to_json(), int(time.time() * 1000))
    return spec


def _reload_on_sighup(policy: PolicyHolder, fleet_control: FleetControl, store: Store) -> None:
    try:
        # admit, schedule and plan come from one read of the file: all of it or none.
        engine = policy.reload()
    except PolicyError as e:
        log.error("SIGHUP: %s; keeping the running policy", e.detail)
    else:
        log.info("SIGHUP: policy %s loaded (sha256 %s)", engine.name, engine.sha256[:12])
    if fleet_control.path is None:
        return
    try:
        spec = load_fleet_file(fleet_control.path)
        store.save_fleet(spec.to_json(), int(time.time() * 1000))
    except InvalidParams as e:
        log.error("SIGHUP: %s; keeping the running desired state", e.detail)
        return
    fleet_control.replace(spec)
    log.info("SIGHUP: fleet %s loaded (%d models)", fleet_control.path, len(spec.models))
