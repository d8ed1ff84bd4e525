"""llorch's Python SDK: submit tasks to orchestratord and stream their tokens.

from llorch_sdk import Client

with Client("http://127.0.0.1:8080", api_key="...") as client:
    stream = client.stream("qwen2.5-0.5b", prompt="Hello", max_tokens=32)
    print(stream.text())
"""

from __future__ import annotations

from llorch_sdk.async_client import AsyncClient, AsyncStream
from llorch_sdk.client import Client, Stream
from llorch_sdk.errors import (
    AdmissionReject,
    Cancelled,
    ConnectionFailed,
    DeadlineUnmet,
    Forbidden,
    InvalidParams,
    LlorchError,
    ModelUnavailable,
    NotFound,
    QueueFull,
    Unauthorized,
    WorkerReset,
)
from llorch_sdk.models import Event, Submitted, TaskPage

__all__ = [
    "AdmissionReject",
    "AsyncClient",
    "AsyncStream",
    "Cancelled",
    "Client",
    "ConnectionFailed",
    "DeadlineUnmet",
    "Event",
    "Forbidden",
    "InvalidParams",
    "LlorchError",
    "ModelUnavailable",
    "NotFound",
    "QueueFull",
    "Stream",
    "Submitted",
    "TaskPage",
    "Unauthorized",
    "WorkerReset",
]
