"""What the sync and the async client share: settings, retries, requests and downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import random
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union, cast

import grpc
from google.protobuf import duration_pb2, struct_pb2

from easel import errors
from easel.jobs.v1 import jobs_pb2

DEFAULT_URL = "http://127.0.0.1:8080"

TERMINAL = frozenset(
    {
        jobs_pb2.JOB_STATUS_SUCCEEDED,
        jobs_pb2.JOB_STATUS_FAILED,
        jobs_pb2.JOB_STATUS_CANCELLED,
        jobs_pb2.JOB_STATUS_EXPIRED,
    }
)

# gRPC's own reconnect backoff starts at 1 s and grows to 2 minutes; a client that retries on
# its own schedule wants the channel to try again about as soon as it asks.
CHANNEL_OPTIONS: Tuple[Tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How calls are retried.

    UNAVAILABLE is retried with exponential backoff and jitter; RESOURCE_EXHAUSTED only when the
    server says when (``RetryInfo``, e.g. a rate limit), after that delay. Submits are retried
    too, always with an idempotency key so a retry never makes a second job.

    Attributes:
        max_attempts: calls made at most, the first included (1 disables retries). For a watch,
            failed reconnects in a row without an event in between.
        initial_backoff: seconds before the first retry.
        max_backoff: the longest backoff, in seconds.
        multiplier: growth of the backoff per attempt.
        max_retry_after: the longest server-requested delay waited; a longer one is raised
            to the caller at once.
    """

    max_attempts: int = 8
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, error: errors.EaselError) -> Optional[float]:
        """Seconds to wait before retry number ``attempt`` (1-based) after ``error``, or
        ``None`` when it is not to be retried."""
        if attempt >= self.max_attempts:
            return None
        if error.code == grpc.StatusCode.UNAVAILABLE:
            backoff = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
            # Full jitter keeps many clients from coming back in lockstep after an outage.
            return max(error.retry_after or 0.0, random.uniform(0.5, 1.0) * backoff)
        if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return error.retry_after
        return None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where and how a client connects, resolved from arguments and the environment."""

    target: str
    secure: bool
    base_url: str
    metadata: Tuple[Tuple[str, str], ...]
    timeout: Optional[float]
    retry: RetryPolicy
    root_certificates: Optional[bytes]

    @staticmethod
    def resolve(
        url: Optional[str],
        api_key: Optional[str],
        token: Optional[str],
        timeout: Optional[float],
        retry: Optional[RetryPolicy],
        root_certificates: Optional[bytes],
    ) -> "Settings":
        url = url or os.environ.get("EASEL_URL") or DEFAULT_URL
        if api_key is None and token is None:
            api_key = os.environ.get("EASEL_API_KEY") or None
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"easel URL must be http(s)://host[:port], not {url!r}")
        secure = parsed.scheme == "https"
        port = parsed.port or (443 if secure else 80)
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        metadata: List[Tuple[str, str]] = []
        if token is not None:
            metadata.append(("authorization", f"Bearer {token}"))
        elif api_key is not None:
            metadata.append(("x-api-key", api_key))
        return Settings(
            target=f"{host}:{port}",
            secure=secure,
            base_url=f"{parsed.scheme}://{host}:{port}",
            metadata=tuple(metadata),
            timeout=timeout,
            retry=retry or RetryPolicy(),
            root_certificates=root_certificates,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials for an https URL."""
        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates)


def idempotency_key(key: Optional[str]) -> str:
    """The caller's key, or a fresh one, so every submit is safe to retry."""
    return key if key else f"py-{uuid.uuid4()}"


def _duration(seconds: Optional[float]) -> Optional[duration_pb2.Duration]:
    if seconds is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def text_to_image_request(
    prompt: str,
    *,
    negative_prompt: str = "",
    width: int = 0,
    height: int = 0,
    steps: int = 0,
    cfg_scale: Optional[float] = None,
    sampler: Optional[Union[int, str]] = None,
    scheduler: Optional[Union[int, str]] = None,
    seed: Optional[int] = None,
    checkpoint: str = "",
    batch_size: int = 0,
    keep_workflow_metadata: bool = False,
    idempotency_key: Optional[str] = None,
    start_timeout: Optional[float] = None,
) -> jobs_pb2.SubmitJobRequest:
    """The SubmitJobRequest of a text-to-image job (zero values take the server's defaults)."""
    text = jobs_pb2.TextToImage(
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        steps=steps,
        checkpoint=checkpoint,
        batch_size=batch_size,
    )
    if cfg_scale is not None:
        text.cfg_scale = cfg_scale
    if seed is not None:
        text.seed = seed
    if sampler is not None:
        text.sampler = cast("jobs_pb2.Sampler.ValueType", _enum_value(jobs_pb2.Sampler, "SAMPLER_", sampler))
    if scheduler is not None:
        text.scheduler = cast("jobs_pb2.Scheduler.ValueType", _enum_value(jobs_pb2.Scheduler, "SCHEDULER_", scheduler))
    spec = jobs_pb2.JobSpec(text_to_image=text, keep_workflow_metadata=keep_workflow_metadata)
    return _submit_request(spec, idempotency_key, start_timeout)


def workflow_request(
    graph: Mapping[str, Any],
    *,
    overrides: Optional[Mapping[Tuple[str, str], Any]] = None,
    keep_workflow_metadata: bool = False,
    idempotency_key: Optional[str] = None,
    start_timeout: Optional[float] = None,
) -> jobs_pb2.SubmitJobRequest:
    """The SubmitJobRequest of a raw ComfyUI API-format graph."""
    workflow = jobs_pb2.Workflow()
    workflow.graph.update(dict(graph))
    for (node_id, name), value in (overrides or {}).items():
        override = workflow.overrides.add(node_id=node_id, input=name)
        _set_value(override.value, value)
    spec = jobs_pb2.JobSpec(workflow=workflow, keep_workflow_metadata=keep_workflow_metadata)
    return _submit_request(spec, idempotency_key, start_timeout)


def _set_value(target: struct_pb2.Value, value: Any) -> None:
    holder = struct_pb2.Struct()
    holder.update({"v": value})
    target.CopyFrom(holder.fields["v"])


def _submit_request(
    spec: jobs_pb2.JobSpec, key: Optional[str], start_timeout: Optional[float]
) -> jobs_pb2.SubmitJobRequest:
    request = jobs_pb2.SubmitJobRequest(spec=spec, idempotency_key=idempotency_key(key))
    timeout = _duration(start_timeout)
    if timeout is not None:
        request.start_timeout.CopyFrom(timeout)
    return request


def _enum_value(enum: Any, prefix: str, value: Union[int, str]) -> int:
    """An enum value from its number, full name (``SAMPLER_EULER``) or ComfyUI name (``euler``)."""
    if isinstance(value, int):
        return value
    name = value.upper()
    if not name.startswith(prefix):
        name = prefix + name
    return int(enum.Value(name))


def status_of(event: jobs_pb2.JobEvent) -> Optional[int]:
    """The job status an event reports (a snapshot's or a status change's), else ``None``."""
    kind = event.WhichOneof("kind")
    if kind == "snapshot":
        return int(event.snapshot.status)
    if kind == "status_change":
        return int(event.status_change.status)
    return None


def is_terminal_event(event: jobs_pb2.JobEvent) -> bool:
    """Whether the event moves (or shows) the job in a terminal status: the watch's last."""
    return status_of(event) in TERMINAL


def output_url(base_url: str, output: jobs_pb2.JobOutput) -> str:
    """The output's signed link, absolute (a relative link is on the gateway)."""
    return urllib.parse.urljoin(base_url + "/", output.url)


class LinkExpired(Exception):
    """The signed link was refused; a fresh one from the job may work."""


def download_to(url: str, output: jobs_pb2.JobOutput, path: PathLike, timeout: Optional[float]) -> pathlib.Path:
    """Streams ``url`` into ``path`` (atomically: a temporary file renamed into place) and checks
    the bytes against the output's size and sha256."""
    target = pathlib.Path(path)
    if target.is_dir():
        target = target / (output.filename or f"{output.artifact_id}.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    handle, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http/https only)
            except urllib.error.HTTPError as error:
                if error.code in (401, 403, 404, 410):
                    raise LinkExpired(f"HTTP {error.code}") from error
                raise errors.DownloadError(f"download of {output.artifact_id} failed: HTTP {error.code}") from error
            except urllib.error.URLError as error:
                raise errors.DownloadError(f"download of {output.artifact_id} failed: {error.reason}") from error
            with response:
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
                    file.write(chunk)
        _check_integrity(output, size, digest.hexdigest())
        os.replace(scratch, target)
    except BaseException:
        pathlib.Path(scratch).unlink(missing_ok=True)
        raise
    return target


def _check_integrity(output: jobs_pb2.JobOutput, size: int, sha256: str) -> None:
    if output.size_bytes and size != output.size_bytes:
        raise errors.DownloadError(
            f"{output.artifact_id}: got {size} bytes, the job says {output.size_bytes}"
        )
    if output.sha256 and sha256 != output.sha256.lower():
        raise errors.DownloadError(f"{output.artifact_id}: sha256 {sha256} is not the job's {output.sha256}")


def list_request(statuses: Sequence[int], page_size: int, page_token: str) -> jobs_pb2.ListJobsRequest:
    """One page's ListJobsRequest; ``statuses`` are ``jobs_pb2.JOB_STATUS_…`` values."""
    return jobs_pb2.ListJobsRequest(
        page_size=page_size,
        page_token=page_token,
        statuses=cast("List[jobs_pb2.JobStatus.ValueType]", list(statuses)),
    )


def output_paths(job: jobs_pb2.Job, path: PathLike) -> List[pathlib.Path]:
    """Where ``generate`` writes each output: ``path`` itself for one image into a file path,
    else ``stem-N.ext`` beside it, or the outputs' own names inside a directory."""
    target = pathlib.Path(path)
    outputs: Sequence[jobs_pb2.JobOutput] = job.outputs
    if target.is_dir() or str(path).endswith(os.sep):
        return [target / (o.filename or f"{o.artifact_id}.png") for o in outputs]
    if len(outputs) == 1:
        return [target]
    return [target.with_name(f"{target.stem}-{index}{target.suffix}") for index in range(1, len(outputs) + 1)]
