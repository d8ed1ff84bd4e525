"""The deploy guide's test runs on the SSH fixtures of the operator CLI's tests."""

from __future__ import annotations

from tests.llorch_ctl.conftest import client_key

__all__ = ["client_key"]
