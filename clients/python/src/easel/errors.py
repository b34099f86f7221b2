"""The exceptions of the easel client.

Every failed call raises a subclass of :class:`EaselError` carrying what the server said: the
gRPC status code, the message, the ``google.rpc.ErrorInfo`` reason and metadata, the
``google.rpc.BadRequest`` field violations and the ``google.rpc.RetryInfo`` delay.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import grpc
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from easel.jobs.v1 import jobs_pb2

_DETAILS_KEY = "grpc-status-details-bin"


@dataclasses.dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request."""

    field: str
    """The field's path in the request, e.g. ``spec.text_to_image.width``."""
    description: str
    """Why it is invalid."""


class EaselError(Exception):
    """A call to easel failed.

    Attributes:
        code: the gRPC status code.
        message: the server's message, for people.
        reason: the machine-readable ``ErrorInfo`` reason (``RATE_LIMITED``, ``MISSING_SCOPE``,
            ``QUOTA_EXHAUSTED``, ...) or ``None``.
        metadata: the ``ErrorInfo`` metadata (e.g. ``required_scope``).
        field_violations: the invalid fields of the request, if any.
        retry_after: seconds the server asked the caller to wait before retrying, or ``None``.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        field_violations: Sequence[FieldViolation] = (),
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.field_violations: List[FieldViolation] = list(field_violations)
        self.retry_after = retry_after

    @property
    def fields(self) -> Dict[str, str]:
        """The invalid fields as ``{path: description}``."""
        return {violation.field: violation.description for violation in self.field_violations}


class InvalidArgument(EaselError):
    """The request is invalid; :attr:`fields` names what is wrong (``INVALID_ARGUMENT``)."""


class FailedPrecondition(EaselError):
    """The request is valid but not now, e.g. cancelling a finished job (``FAILED_PRECONDITION``)."""


class Unauthenticated(EaselError):
    """No valid credential: a missing, wrong, revoked or expired key or token (``UNAUTHENTICATED``)."""


class PermissionDenied(EaselError):
    """The credential may not do this; a missing scope has reason ``MISSING_SCOPE``."""


class NotFound(EaselError):
    """No such job (or model, or key), or it belongs to someone else (``NOT_FOUND``)."""


class AlreadyExists(EaselError):
    """The resource exists already (``ALREADY_EXISTS``)."""


class Aborted(EaselError):
    """A conflict, e.g. the first request with this idempotency key is still in flight."""


class ResourceExhausted(EaselError):
    """A limit of the caller was hit (``RESOURCE_EXHAUSTED``)."""


class RateLimited(ResourceExhausted):
    """Over the request rate of the caller's tier; :attr:`retry_after` says when to try again."""


class QuotaExhausted(ResourceExhausted):
    """A quota is used up (jobs per day, concurrent jobs)."""


class Unavailable(EaselError):
    """The platform or one of its dependencies is down, or it sheds load (``UNAVAILABLE``)."""


class DeadlineExceeded(EaselError):
    """The call did not finish within its deadline (``DEADLINE_EXCEEDED``)."""


class InternalError(EaselError):
    """The server failed (``INTERNAL``, ``UNKNOWN``, ``DATA_LOSS``)."""


class Cancelled(EaselError):
    """The call was cancelled (``CANCELLED``)."""


class JobFailed(Exception):
    """A job ended without images (FAILED, CANCELLED or EXPIRED).

    Attributes:
        job: the job as it ended; ``job.error`` says why when it FAILED or EXPIRED.
    """

    def __init__(self, job: "jobs_pb2.Job") -> None:
        from easel.jobs.v1 import jobs_pb2

        status = jobs_pb2.JobStatus.Name(job.status)
        detail = f": {job.error.code}: {job.error.message}" if job.HasField("error") else ""
        super().__init__(f"job {job.id} ended {status}{detail}")
        self.job = job


class WaitTimeout(TimeoutError):
    """A job did not reach a terminal status within the time given to ``wait``."""


class DownloadError(Exception):
    """An output could not be downloaded, or its bytes do not match the job's size and sha256."""


_BY_CODE: Dict[grpc.StatusCode, Type[EaselError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
    grpc.StatusCode.CANCELLED: Cancelled,
}

_BY_REASON: Dict[str, Type[EaselError]] = {
    "RATE_LIMITED": RateLimited,
    "QUOTA_EXHAUSTED": QuotaExhausted,
}


def _parse_details(
    trailers: Sequence[Tuple[str, object]],
) -> Tuple[Optional[str], Dict[str, str], List[FieldViolation], Optional[float]]:
    """Reads the ``google.rpc.Status`` the server put in the trailers."""
    reason: Optional[str] = None
    metadata: Dict[str, str] = {}
    violations: List[FieldViolation] = []
    retry_after: Optional[float] = None
    for key, value in trailers:
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad_request = error_details_pb2.BadRequest()
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                reason = info.reason or None
                metadata = dict(info.metadata)
            elif detail.Unpack(bad_request):
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
            elif detail.Unpack(retry):
                retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return reason, metadata, violations, retry_after


def from_rpc_error(error: grpc.RpcError) -> EaselError:
    """The :class:`EaselError` subclass for a failed gRPC call, with its details."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    message = error.details() if hasattr(error, "details") else str(error)  # type: ignore[attr-defined]
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None  # type: ignore[attr-defined]
    return from_status(code, message or "", tuple(trailers or ()))


def from_status(
    code: grpc.StatusCode, message: str, trailers: Sequence[Tuple[str, object]]
) -> EaselError:
    """Builds the exception for ``code`` and the ``google.rpc`` details in ``trailers``."""
    reason, metadata, violations, retry_after = _parse_details(trailers)
    kind = _BY_CODE.get(code, EaselError)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason in _BY_REASON:
        kind = _BY_REASON[reason]
    return kind(
        code,
        message,
        reason=reason,
        metadata=metadata,
        field_violations=violations,
        retry_after=retry_after,
    )
