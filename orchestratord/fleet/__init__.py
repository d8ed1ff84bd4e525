"""The fleet's desired state, the scaling plan and the actions that converge it (specs/fleet.md).

Pure modules: `desired` (the file and `PUT /v2/fleet` body, validated), `plan_hook` (the
Starlark `plan(fleet, cluster)` hook and the built-in one), `actions` (the diff from desired
and planned replicas to the precise pool commands `llorch fleet apply` runs).
"""
