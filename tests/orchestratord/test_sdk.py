"""The SDK against a real orchestratord and a real worker (tiny model) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from llorch_sdk import (
    AsyncClient,
    Client,
    DeadlineUnmet,
    Event,
    Forbidden,
    InvalidParams,
    NotFound,
    QueueFull,
    Unauthorized,
    WorkerReset,
)
from tests.orchestratord.cluster import orchestratord, wait_for, worker
from tests.orchestratord.sdk_cluster import (
    API_KEY,
    CLUSTER_TOKEN,
    LONG,
    MODEL,
    TENANT,
    WORKER_ID,
    Cluster,
    run_cluster,
)

pytestmark = pytest.mark.e2e
QUEUE_CAPACITY = 4


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with run_cluster(
        tiny_model,
        tmp_path_factory.mktemp("sdk"),
        extra=["--queue-capacity", str(QUEUE_CAPACITY)],
    ) as c:
        yield c


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with Client(cluster.url, api_key=API_KEY) as c:
        yield c


def test_stream_yields_every_event_in_order(client: Client) -> None:
    stream = client.stream(MODEL, prompt="Hello", max_tokens=5, temperature=0.0, ignore_eos=True)
    events = list(stream)
    assert [e.id for e in events] == list(range(len(events)))
    kinds = [e.event for e in events]
    # A token event carries whole characters, so a few tokens may share one event.
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "end"
    assert set(kinds[2:-1]) == {"token"} and 1 <= len(kinds) - 3 <= 5
    assert [e.data["i"] for e in events[2:-1]] == list(range(len(kinds) - 3))
    assert events[-1].data["tokens_out"] == 5
    assert events[-1].data["stop_reason"] == "MAX_TOKENS"
    record = client.get(stream.task_id)
    assert (record["status"], record["tokens_out"], record["tenant"]) == ("succeeded", 5, TENANT)
    text = "".join(e.data["t"] for e in events if e.event == "token")
    # Greedy decoding is deterministic: the same request gives the same text.
    again = client.stream(MODEL, prompt="Hello", max_tokens=5, temperature=0.0, ignore_eos=True)
    assert again.text() == text


def test_submit_then_events_with_messages(client: Client) -> None:
    submitted = client.submit(
        MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, seed=7, ignore_eos=True
    )
    assert submitted.status == "queued" and submitted.task_id
    assert submitted.events_url == f"/v2/tasks/{submitted.task_id}/events"
    events = list(client.events(submitted.task_id))
    assert events[-1].event == "end" and events[-1].data["tokens_out"] == 3


def test_resubmitting_a_task_id_returns_the_same_task(client: Client) -> None:
    first = client.submit(MODEL, prompt="same", max_tokens=2, task_id="sdk-idem-1")
    again = client.submit(MODEL, prompt="same", max_tokens=2, task_id="sdk-idem-1")
    assert first.task_id == again.task_id == "sdk-idem-1"
    assert list(client.events("sdk-idem-1"))[-1].event == "end"


def test_cancel_mid_stream_ends_the_task_cancelled(client: Client, cluster: Cluster) -> None:
    stream = client.stream(MODEL, **LONG)
    tokens = 0
    end: Event | None = None
    for event in stream:
        if event.event == "token":
            tokens += 1
            if tokens == 1:
                client.cancel(stream.task_id)
        if event.event == "end":
            end = event
    assert end is not None and end.data["stop_reason"] == "CANCELLED"
    assert end.data["tokens_out"] < 16000
    assert client.get(stream.task_id)["status"] == "cancelled"
    client.cancel(stream.task_id)  # idempotent
    health = httpx.get(cluster.worker.url + "/health").json()
    assert health["slots_busy"] == 0


def test_resume_with_last_event_id_loses_nothing(client: Client) -> None:
    submitted = client.submit(MODEL, prompt="resume", max_tokens=40, ignore_eos=True)
    head: list[Event] = []
    for event in client.events(submitted.task_id):
        head.append(event)
        if len(head) == 4:
            break  # the reader goes away mid-stream
    tail = list(client.events(submitted.task_id, last_event_id=head[-1].id))
    full = list(client.events(submitted.task_id))
    assert head + tail == full
    assert full[-1].event == "end" and full[-1].data["tokens_out"] == 40
    tokens = [e.data["i"] for e in full if e.event == "token"]
    assert tokens == list(range(len(tokens))) and len(tokens) > 10


class DroppingTransport(httpx.BaseTransport):
    """Real HTTP, but the first `drops` event streams break after two events (mid-frame)."""

    def __init__(self, drops: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.drops = drops
        self.event_requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/events"):
            return response
        self.event_requests.append(request)
        if self.drops == 0:
            return response
        self.drops -= 1
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Broken(response),
            request=request,
        )

    def close(self) -> None:
        self.inner.close()


class _Broken(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        seen = b""
        for chunk in self.response.iter_raw():
            seen += chunk
            frames = seen.split(b"\n\n")
            if len(frames) > 2:
                # Two whole events and a few bytes of the third, then the connection dies.
                yield b"\n\n".join(frames[:2]) + b"\n\n" + frames[2][:5]
                self.response.close()
                raise httpx.RemoteProtocolError("peer closed connection mid-stream")
        yield seen

    def close(self) -> None:
        self.response.close()


def test_dropped_connections_are_resumed_with_last_event_id(cluster: Cluster) -> None:
    transport = DroppingTransport(drops=3)
    http = httpx.Client(
        base_url=cluster.url,
        transport=transport,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    with Client(cluster.url, http_client=http) as client:
        submitted = client.submit(MODEL, prompt="drops", max_tokens=40, ignore_eos=True)
        events = list(client.events(submitted.task_id))
    assert [e.id for e in events] == list(range(len(events)))
    assert events[-1].event == "end" and events[-1].data["tokens_out"] == 40
    tokens = [e.data["i"] for e in events if e.event == "token"]
    assert tokens == list(range(len(tokens))) and len(tokens) > 10
    assert len(transport.event_requests) == 4
    resumed_from = [r.headers.get("last-event-id") for r in transport.event_requests]
    assert resumed_from == [None, "1", "3", "5"]


def test_errors_become_typed_exceptions(cluster: Cluster, client: Client) -> None:
    with pytest.raises(InvalidParams) as bad:
        client.submit(MODEL, prompt="x", temperature=5.0)
    assert (bad.value.status, bad.value.code, bad.value.retriable) == (400, "INVALID_PARAMS", False)
    assert [e["field"] for e in bad.value.errors] == ["temperature"]
    with pytest.raises(InvalidParams):
        client.submit(MODEL)  # neither prompt nor messages
    with pytest.raises(NotFound) as missing:
        client.get("no-such-task")
    assert missing.value.status == 404
    with pytest.raises(NotFound):
        list(client.events("no-such-task"))
    with pytest.raises(NotFound):
        client.cancel("no-such-task")
    with Client(cluster.url, api_key="wrong") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.capabilities()
    assert denied.value.status == 401
    with pytest.raises(Forbidden):
        client.workers()  # a client key is not the cluster token


def test_a_task_that_cannot_start_in_time_fails_with_deadline_unmet(client: Client) -> None:
    stream = client.stream("no-such-model", prompt="x", max_tokens=2, deadline_ms=200)
    with pytest.raises(DeadlineUnmet) as exc:
        stream.text()
    assert exc.value.code == "DEADLINE_UNMET"


def test_full_queue_raises_queue_full_with_a_retry_hint(client: Client) -> None:
    waiting = [
        client.submit("no-such-model", prompt="x", max_tokens=1) for _ in range(QUEUE_CAPACITY)
    ]
    try:
        with pytest.raises(QueueFull) as exc:
            client.submit("no-such-model", prompt="x", max_tokens=1)
        assert (exc.value.status, exc.value.retriable) == (429, True)
        assert exc.value.retry_after_ms is not None and exc.value.retry_after_ms > 0
    finally:
        for s in waiting:
            client.cancel(s.task_id)
    assert client.get(waiting[0].task_id)["status"] == "cancelled"


def test_capabilities_and_workers(cluster: Cluster, client: Client) -> None:
    caps = client.capabilities()
    assert MODEL in caps["models"]
    with Client(cluster.url, api_key=CLUSTER_TOKEN) as operator:
        workers = operator.workers()
    assert [w["id"] for w in workers] == [WORKER_ID]
    assert workers[0]["model"] == MODEL


def test_async_client_streams_and_cancels(cluster: Cluster) -> None:
    async def main() -> tuple[str, list[Event]]:
        async with AsyncClient(cluster.url, api_key=API_KEY) as client:
            text = await (
                await client.stream(MODEL, prompt="Hello", max_tokens=5, temperature=0.0)
            ).text()
            stream = await client.stream(MODEL, **LONG)
            events: list[Event] = []
            async for event in stream:
                events.append(event)
                if event.event == "token" and event.data["i"] == 0:
                    await client.cancel(stream.task_id)
            record = await client.get(stream.task_id)
            assert record["status"] == "cancelled", (record, events[-3:])
            return text, events

    text, events = asyncio.run(main())
    with Client(cluster.url, api_key=API_KEY) as sync:
        assert text == sync.stream(MODEL, prompt="Hello", max_tokens=5, temperature=0.0).text()
    assert events[-1].event == "end" and events[-1].data["stop_reason"] == "CANCELLED"


def test_the_demo_command_streams_a_task(cluster: Cluster) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "llorch_sdk",
                "--orchestrator-url",
                cluster.url,
                "--model",
                MODEL,
                "--prompt",
                "Hello",
                "--max-tokens",
                "4",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run("--api-key", API_KEY)
    assert ok.returncode == 0, ok.stderr
    assert "stop: " in ok.stdout and "tokens" in ok.stdout
    denied = run("--api-key", "wrong")
    assert denied.returncode == 1
    assert denied.stderr.count("\n") == 1 and "UNAUTHORIZED" in denied.stderr


def test_orch_026_a_task_lost_to_a_restart_raises_a_retriable_error(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-026, ORCH-064: a stream whose orchestratord was killed reconnects to the restarted
    one and gets the task's own retriable WORKER_RESET (it used to be NotFound, which says
    the task never existed); reading the events afresh says the same."""
    state = tmp_path / "state"
    keys = ("--api-key", f"{TENANT}:{API_KEY}")

    def stored_running() -> int:
        """Tasks running in the database (the only task here, once on disk)."""
        db = f"file:{state / 'orchestratord.sqlite3'}?mode=ro"
        with contextlib.closing(sqlite3.connect(db, uri=True)) as c:
            return int(
                c.execute("SELECT count(*) FROM tasks WHERE status = 'running'").fetchone()[0]
            )

    with orchestratord(tmp_path, *keys, state_dir=state) as orch:
        port = orch.port
        with (
            worker(tiny_model, tmp_path, orch.url, "s1"),
            Client(orch.url, api_key=API_KEY) as client,
        ):
            client.submit(MODEL, **LONG, task_id="sdk-restart")
            events = client.events("sdk-restart")
            assert [next(events).event for _ in range(3)] == ["queued", "started", "token"]
            wait_for(stored_running, what="the task's record on disk")
            orch.kill(signal.SIGKILL)
            with orchestratord(tmp_path, *keys, port=port, state_dir=state):
                with pytest.raises(WorkerReset) as lost:
                    for _ in events:
                        pass
                assert lost.value.retriable and lost.value.status == 502
                with pytest.raises(WorkerReset):
                    list(client.events("sdk-restart", last_event_id=-1))
                assert client.get("sdk-restart")["error_code"] == "WORKER_RESET"


PICK = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "ok": {"type": "boolean"}},
    "required": ["color", "ok"],
}


def test_orch_247_the_sdk_asks_for_a_schema_and_logprobs(cluster: Cluster, client: Client) -> None:
    """ORCH-247, ORCH-241: `json_schema=` binds the output (it validates), `logprobs=` and
    `top_logprobs=` make the task's token events carry the worker's entries; sync and async."""
    stream = client.stream(
        MODEL,
        prompt="JSON:",
        max_tokens=200,
        seed=5,
        json_schema=PICK,
        logprobs=True,
        top_logprobs=2,
    )
    events = list(stream)
    tokens = [e for e in events if e.event == "token"]
    text = "".join(str(e.data["t"]) for e in tokens)
    jsonschema.validate(json.loads(text), PICK)
    entries = [entry for e in tokens for entry in e.data["logprobs"]]
    assert entries and all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 2 for e in entries)
    assert events[-1].event == "end" and len(entries) == events[-1].data["tokens_out"]

    async def main() -> str:
        async with AsyncClient(cluster.url, api_key=API_KEY) as aclient:
            return await (
                await aclient.stream(
                    MODEL, prompt="JSON:", max_tokens=200, seed=6, json_schema=PICK
                )
            ).text()

    jsonschema.validate(json.loads(asyncio.run(main())), PICK)
    with pytest.raises(InvalidParams) as bad:
        client.submit(MODEL, prompt="x", grammar="root ::= x", json_schema=PICK)
    assert bad.value.errors[0]["field"] == "grammar"
    assert (
        "logprobs"
        not in next(
            e for e in client.stream(MODEL, prompt="x", max_tokens=2) if e.event == "token"
        ).data
    )
