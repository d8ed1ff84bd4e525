"""Turn Starlark policy source into something callable, or say clearly why it cannot be.

A policy is evaluated in a bare sandbox: the standard Starlark globals only (no `print`, no
`json`, no Python callable of ours), `load()` disabled, its module frozen after evaluation so
no state survives between calls. The engine does not call the policy's functions directly:
a small adapter module, generated here, `load()`s them from the frozen policy and hands them
dicts decoded from one compact JSON string per call, which costs a third of what converting
Python dicts through the binding does (bench/policy_cost.py). The task, each worker and the
cluster travel as rows (lists of their fields in TASK_KEYS, WORKER_KEYS, CLUSTER_KEYS order)
and become dicts inside Starlark, so the policy sees exactly the documented fields and nothing
else the daemon may keep about them.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable
from dataclasses import dataclass

import starlark as sl

from orchestratord.policy.checks import CallFailed
from orchestratord.policy.types import (
    ACCEPT,
    CLUSTER_KEYS,
    TASK_KEYS,
    WORKER_KEYS,
    PolicyError,
    PolicyFunction,
)

SIGNATURES: dict[PolicyFunction, tuple[str, ...]] = {
    "admit": ("task", "cluster"),
    "schedule": ("task", "workers", "cluster"),
    "plan": ("fleet", "cluster"),  # specs/fleet.md FLT-010
}
_POLICY_MODULE = "policy"
_YIELD_S = 0.001  # a long call lets other threads run at least this often


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A validated-to-compile policy: which functions it defines and how to call them."""

    name: str
    defines: frozenset[PolicyFunction]
    warnings: tuple[str, ...]
    adapter: sl.FrozenModule


def describe(exc: BaseException) -> str:
    """One line from a Starlark error: `file:line:col: message`, without the traceback."""
    lines = [line.rstrip() for line in str(exc).splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("error: "):
            message = lines[i].removeprefix("error: ")
            if i + 1 < len(lines) and lines[i + 1].lstrip().startswith("--> "):
                return f"{lines[i + 1].lstrip().removeprefix('--> ')}: {message}"
            return message
    return lines[0] if lines else type(exc).__name__


def _dialect() -> sl.Dialect:
    dialect = sl.Dialect.standard()
    dialect.enable_load = False
    return dialect


def _lint(name: str, module: sl.AstModule) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    for lint in module.lint():
        if lint.severity == sl.EvalSeverity.Disabled:
            continue
        begin = lint.resolved_location.span.begin
        text = f"{name}:{begin.line + 1}:{begin.column + 1}: {lint.short_name}: {lint.problem}"
        (errors if lint.severity == sl.EvalSeverity.Error else warnings).append(text)
    return errors, warnings


def _arity_problems(name: str, source: str) -> list[str]:
    """Check the signatures of top-level `def admit/schedule` statically.

    Starlark's syntax is a subset of Python's, so Python's parser reads the `def` lines; a
    file it cannot read is left to the dry run, which fails on a wrong arity just the same.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    problems = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name not in SIGNATURES:
            continue
        want = len(SIGNATURES[node.name])
        args = node.args
        total = len(args.posonlyargs) + len(args.args)
        required = total - len(args.defaults)
        required_kw = sum(1 for d in args.kw_defaults if d is None)
        if required_kw == 0 and required <= want and (total >= want or args.vararg):
            continue
        given = ", ".join(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])
        expected = ", ".join(SIGNATURES[node.name])
        problems.append(
            f"{name}:{node.lineno}: {node.name} must take {want} positional parameters "
            f"({expected}), but is defined as {node.name}({given})"
        )
    return problems


def _literal(keys: tuple[str, ...], row: str) -> str:
    """Starlark for the dict of `keys` whose values are the items of the list `row`."""
    return "{" + ", ".join(f"{key!r}: {row}[{i}]" for i, key in enumerate(keys)) + "}"


def _adapter_source(defines: frozenset[PolicyFunction]) -> str:
    # The task, each worker and the cluster travel as rows (values in TASK_KEYS, WORKER_KEYS,
    # CLUSTER_KEYS order), which encode and decode without their keys, and become dicts here
    # through dict literals: cheaper in Starlark than dict(zip(KEYS, row)).
    task, worker, cluster = (
        _literal(TASK_KEYS, "t"),
        _literal(WORKER_KEYS, "w"),
        _literal(CLUSTER_KEYS, "c"),
    )
    lines = [f'load("{_POLICY_MODULE}", _{fn}="{fn}")' for fn in sorted(defines)]
    if "admit" in defines:
        # The usual answer comes back as the host's ACCEPT itself (`_ACCEPTED`, opaque to
        # Starlark): the binding converts every other returned value through Python's json.
        lines += [
            "def admit(j):",
            "    t, c = json.decode(j)",
            f"    d = _admit({task}, {cluster})",
            '    return _ACCEPTED if d == {"accept": True} else d',
        ]
    if "schedule" in defines:
        lines += [
            "def schedule(j):",
            "    t, c, ws = json.decode(j)",
            f"    return _schedule({task}, [{worker} for w in ws], {cluster})",
        ]
    if "plan" in defines:
        lines += [
            "def plan(j):",
            "    f, c = json.decode(j)",
            "    return _plan(f, c)",
        ]
    return "\n".join(lines) + "\n"


def compile_policy(
    source: str, name: str, *, clock: Callable[[], float], budget_s: float
) -> CompiledPolicy:
    """Parse, lint, evaluate and wrap `source`; PolicyError lists everything wrong with it.

    Top-level statements run under `budget_s` of `clock` like every later call.
    """
    try:
        module_ast = sl.parse(name, source, _dialect())
    except sl.StarlarkError as e:
        raise PolicyError(name, [f"does not parse: {describe(e)}"]) from None
    errors, warnings = _lint(name, module_ast)
    errors += _arity_problems(name, source)
    if errors:
        raise PolicyError(name, errors)

    module = sl.Module()
    deadline = clock() + budget_s
    options = sl.EvalOptions(check_cancelled=lambda: clock() > deadline)
    try:
        sl.eval_with(options, module, module_ast, sl.Globals.standard())
    except sl.StarlarkError as e:
        raise PolicyError(name, [f"top-level code failed: {describe(e)}"]) from None

    defines: set[PolicyFunction] = set()
    problems = []
    for fn in SIGNATURES:
        try:
            kind = sl.eval(module, sl.parse("<probe>", f"type({fn})"), sl.Globals.standard())
        except sl.StarlarkError:
            continue  # the one way `type(NAME)` fails: NAME is not defined
        if kind == "function":
            defines.add(fn)
        else:
            problems.append(f"`{fn}` must be a function, but is of type {kind}")
    if problems:
        raise PolicyError(name, problems)

    frozen = module.freeze()
    adapter = sl.Module()
    adapter["_ACCEPTED"] = sl.OpaquePythonObject(ACCEPT)
    loader = sl.FileLoader(lambda _module_id: frozen)
    adapter_ast = sl.parse("<llorch-adapter>", _adapter_source(frozenset(defines)))
    sl.eval(adapter, adapter_ast, sl.Globals.extended_by([sl.LibraryExtension.Json]), loader)
    return CompiledPolicy(name, frozenset(defines), tuple(warnings), adapter.freeze())


def call_budgeted(
    adapter: sl.FrozenModule,
    fn: str,
    payload: str,
    budget_ms: float | None,
    clock: Callable[[], float],
) -> object:
    """Call one policy function (admit, schedule, plan) with its JSON payload; raise CallFailed
    on a Starlark error, or with reason "timeout" when it ran past `budget_ms` (None: no budget,
    for the built-in policies)."""
    if budget_ms is None:
        try:
            return adapter.call(fn, payload)
        except sl.StarlarkError as e:
            raise CallFailed("error", describe(e)) from None
    deadline = clock() + budget_ms / 1000
    overran = False
    yield_at = time.perf_counter() + _YIELD_S

    def cancelled() -> bool:
        nonlocal overran, yield_at
        # starlark-pyo3 holds the GIL for the whole call; this callback (about every 1000
        # steps) is where another thread, the event loop, can get it back (POL-091).
        now = time.perf_counter()
        if now >= yield_at:
            time.sleep(0)
            yield_at = now + _YIELD_S
        overran = clock() > deadline
        return overran

    try:
        return adapter.call_with(sl.EvalOptions(check_cancelled=cancelled), fn, payload).value
    except sl.StarlarkError as e:
        if overran:
            raise CallFailed("timeout", f"ran past its {budget_ms:g} ms budget") from None
        raise CallFailed("error", describe(e)) from None
