"""easel: image generation on ComfyUI, from Python.

``Client`` (sync) and ``AsyncClient`` (``grpc.aio``) talk gRPC to the easel gateway::

    import easel

    with easel.Client() as client:  # EASEL_URL, EASEL_API_KEY
        client.generate("a lighthouse at dusk", "lighthouse.png", width=768, height=512)

The messages are the generated ``easel.jobs.v1.jobs_pb2`` classes (``Job``, ``JobEvent``,
``JobOutput``, ...), re-exported here; errors are :class:`EaselError` subclasses.
"""

from easel._core import RetryPolicy
from easel.aio import AsyncClient, AsyncJobWatch
from easel.client import Client, JobWatch
from easel.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    DownloadError,
    EaselError,
    FailedPrecondition,
    FieldViolation,
    InternalError,
    InvalidArgument,
    JobFailed,
    NotFound,
    PermissionDenied,
    QuotaExhausted,
    RateLimited,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from easel.jobs.v1.jobs_pb2 import (
    Job,
    JobEvent,
    JobOutput,
    JobStatus,
)

__version__ = "0.1.0"

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "AsyncJobWatch",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "DownloadError",
    "EaselError",
    "FailedPrecondition",
    "FieldViolation",
    "InternalError",
    "InvalidArgument",
    "Job",
    "JobEvent",
    "JobFailed",
    "JobOutput",
    "JobStatus",
    "JobWatch",
    "NotFound",
    "PermissionDenied",
    "QuotaExhausted",
    "RateLimited",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "WaitTimeout",
]
