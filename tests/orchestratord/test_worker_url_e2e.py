"""A worker URL orchestratord cannot open a connection to (a port out of range, a NUL or an
over-long label in the host) once registered fine and then hung every task placed on it: the
relay raised ValueError, which no handler took, so the task stayed open and its client waited
forever. Registration now refuses such a URL, and the tasks of every session still run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.orchestratord.sdk_cluster import (
    API_KEY,
    CLUSTER_TOKEN,
    MODEL,
    WORKER_ID,
    Cluster,
    run_cluster,
)

pytestmark = pytest.mark.e2e
UNUSABLE = ["http://127.0.0.1:99999", "http://\u0000", "http://" + "x" * 70 + ":8080", "http:"]


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with run_cluster(tiny_model, tmp_path_factory.mktemp("worker-url")) as c:
        yield c


@pytest.mark.parametrize("url", UNUSABLE)
def test_a_worker_url_that_cannot_be_connected_to_is_refused(cluster: Cluster, url: str) -> None:
    ct = {"Authorization": f"Bearer {CLUSTER_TOKEN}"}
    body = {"worker_id": "unusable", "url": url, "model": MODEL, "slots_total": 64}
    r = httpx.post(cluster.url + "/v2/workers/register", json=body, headers=ct, timeout=10)
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["url"]
    listed = httpx.get(cluster.url + "/v2/workers", headers=ct, timeout=10).json()["workers"]
    assert [w["id"] for w in listed] == [WORKER_ID]
    # Sessions stick to a worker by rendezvous hashing, so several of them would have been
    # placed on the unusable worker; each must still get its completion.
    for session in range(8):
        r = httpx.post(
            cluster.url + "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2,
                "user": f"session-{session}",
            },
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=20,
        )
        assert r.status_code == 200, r.text
