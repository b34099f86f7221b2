"""How a client resolves its URL and credentials; no server needed."""

from __future__ import annotations

import grpc
import pytest

import easel
from easel import _core, errors
from easel.jobs.v1 import jobs_pb2


def resolve(url=None, api_key=None, token=None):  # type: ignore[no-untyped-def]
    return _core.Settings.resolve(url, api_key, token, None, None, None)


def test_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EASEL_URL", "https://easel.example.com")
    monkeypatch.setenv("EASEL_API_KEY", "easel_k_secret")
    settings = resolve()
    assert settings.target == "easel.example.com:443"
    assert settings.secure
    assert settings.metadata == (("x-api-key", "easel_k_secret"),)


def test_arguments_win_over_the_environment_and_a_token_replaces_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EASEL_URL", "https://easel.example.com")
    monkeypatch.setenv("EASEL_API_KEY", "easel_k_secret")
    settings = resolve("http://127.0.0.1:9000", token="eyJ.token")
    assert settings.target == "127.0.0.1:9000"
    assert not settings.secure
    assert settings.metadata == (("authorization", "Bearer eyJ.token"),)


def test_defaults_and_bad_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EASEL_URL", raising=False)
    monkeypatch.delenv("EASEL_API_KEY", raising=False)
    settings = resolve()
    assert settings.target == "127.0.0.1:8080"
    assert settings.metadata == ()
    assert resolve("[::1]:7000").target == "[::1]:7000"
    with pytest.raises(ValueError):
        resolve("ftp://example.com")


def test_every_submit_carries_an_idempotency_key() -> None:
    first = _core.text_to_image_request("a cat")
    second = _core.text_to_image_request("a cat")
    assert first.idempotency_key and second.idempotency_key
    assert first.idempotency_key != second.idempotency_key
    assert _core.text_to_image_request("a cat", idempotency_key="mine").idempotency_key == "mine"


def test_sampler_names_and_unset_optionals() -> None:
    request = _core.text_to_image_request("a cat", sampler="dpmpp_2m", scheduler="KARRAS", seed=0)
    text = request.spec.text_to_image
    assert text.sampler == jobs_pb2.SAMPLER_DPMPP_2M
    assert text.scheduler == jobs_pb2.SCHEDULER_KARRAS
    assert text.HasField("seed") and text.seed == 0
    assert not text.HasField("cfg_scale")


def test_workflow_overrides_become_values() -> None:
    request = _core.workflow_request({"1": {"class_type": "EmptyImage", "inputs": {}}}, overrides={("1", "width"): 64})
    override = request.spec.workflow.overrides[0]
    assert (override.node_id, override.input, override.value.number_value) == ("1", "width", 64)


def test_retry_policy() -> None:
    policy = easel.RetryPolicy(max_attempts=3, initial_backoff=1.0, max_retry_after=10)
    unavailable = errors.Unavailable(grpc.StatusCode.UNAVAILABLE, "down")
    assert 0.5 <= (policy.delay(1, unavailable) or 0) <= 1.0
    assert policy.delay(3, unavailable) is None
    limited = errors.RateLimited(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after=2.5)
    assert policy.delay(1, limited) == 2.5
    too_long = errors.RateLimited(grpc.StatusCode.RESOURCE_EXHAUSTED, "tomorrow", retry_after=3600)
    assert policy.delay(1, too_long) is None
    quota = errors.QuotaExhausted(grpc.StatusCode.RESOURCE_EXHAUSTED, "no more today")
    assert policy.delay(1, quota) is None
    assert policy.delay(1, errors.InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, "bad")) is None
