"""orchestratord's layout shows its architecture: imports point down the layers, never in a
circle (ORCH-140)."""

from __future__ import annotations

import ast
from pathlib import Path

import orchestratord

ROOT = Path(orchestratord.__file__).parent
# Lower layers never import higher ones. Same rank: either way, as long as there is no cycle.
# The policy engine sits above the domain: the domain builds what a policy sees
# (domain/views.py) and knows nothing of Starlark or the engine.
RANK = {
    "settings": 0,
    "metrics": 0,
    "domain": 0,
    "policy": 1,
    "fleet": 2,
    "store": 2,
    "worker_client": 2,
    "runtime": 3,
    "replay": 3,
    "http": 4,
    "app": 5,
    "__main__": 6,
}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """Module -> orchestratord modules it imports (TYPE_CHECKING imports included)."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "package"


def test_orch_140_imports_point_down_the_layers() -> None:
    wrong = [
        f"{m} -> {d}"
        for m, deps in _graph().items()
        for d in deps
        if _layer(m) in RANK and _layer(d) in RANK and RANK[_layer(d)] > RANK[_layer(m)]
    ]
    assert wrong == []


def test_orch_140_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            # A package's __init__ re-exporting its own modules is not a cycle of concepts.
            if d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                cycles.append([*path[path.index(d) :], d] if d in path else [m, d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_orch_140_the_domain_is_pure() -> None:
    """The pure core does no I/O and starts nothing: no asyncio, sockets, HTTP or database."""
    banned = {"asyncio", "httpx", "sqlalchemy", "socket", "starlette", "time", "anyio"}
    found = []
    for path in (ROOT / "domain").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in banned]
    assert found == []


def test_orch_004_two_apps_in_one_process_share_no_state(tmp_path: Path) -> None:
    """ORCH-004: all runtime state lives in each app's lifespan: two orchestratord apps in one
    process (as tests and embedders make them) see their own workers, tasks and metrics only."""
    from starlette.testclient import TestClient

    from orchestratord.app import create_app
    from orchestratord.settings import Settings

    def app(name: str) -> TestClient:
        settings = Settings(state_dir=tmp_path / name, cluster_token="ct", expect_models=("m",))
        return TestClient(create_app(settings))

    ct = {"authorization": "Bearer ct"}
    worker = {"worker_id": "w1", "url": "http://127.0.0.1:9", "model": "m", "slots_total": 1}
    with app("a") as a, app("b") as b:
        assert a.post("/v2/workers/register", json=worker, headers=ct).status_code == 201
        task = a.post("/v2/tasks", json={"model": "m", "prompt": "hi", "max_tokens": 2})
        task_id = task.json()["task_id"]
        assert [w["id"] for w in a.get("/v2/workers", headers=ct).json()["workers"]] == ["w1"]
        assert b.get("/v2/workers", headers=ct).json()["workers"] == []
        assert b.get(f"/v2/tasks/{task_id}").status_code == 404
        admits = 'llorch_orchestrator_policy_eval_seconds_count{fn="admit"}'

        def admitted(client: TestClient) -> float:
            lines = [x for x in client.get("/metrics").text.splitlines() if x.startswith(admits)]
            return float(lines[0].split()[-1]) if lines else 0.0

        assert (admitted(a), admitted(b)) == (1.0, 0.0)
