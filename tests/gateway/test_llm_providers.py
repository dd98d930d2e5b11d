"""The Anthropic (real SDK) and OpenAI-compatible providers against real local API servers."""

from __future__ import annotations

import asyncio
import json
import time
from email.utils import formatdate

import pytest

from careflow.llm.providers import retry_after_seconds
from careflow.llm.providers.anthropic import AnthropicProvider
from careflow.llm.providers.offline import OfflineProvider
from careflow.llm.providers.openai_compatible import OpenAICompatibleProvider
from careflow.llm.structured import parse_output
from careflow.llm.tasks import TASKS, RagAnswer
from careflow.llm.types import CompletionRequest, Evidence, Message, ProviderError
from careflow.net import free_port
from tests.support.fake_upstreams import Reply, fake_anthropic, fake_openai

PINNED = "claude-sonnet-4-6-20260115"
EVIDENCE = [
    Evidence(
        id="guideline:idsa-cap-2019#4.1",
        kind="guideline",
        title="IDSA/ATS Community-Acquired Pneumonia 2019",
        text="Section: 4.1 Empiric outpatient therapy\nEffective: 2019-10-01\n"
        "For healthy outpatients with CAP, amoxicillin 1 g three times daily is recommended.",
    )
]


def rag_request() -> CompletionRequest:
    return TASKS["rag_answer"].build_request({"question": "First-line antibiotic for CAP?"}, EVIDENCE)


ERRORS = [
    (Reply.overloaded(), "overloaded", None),
    (Reply.rate_limited(retry_after=7), "rate_limited", 7.0),
    (Reply.server_error(500), "server", None),
    (Reply.server_error(503), "server", None),
    (Reply.bad_request(400), "bad_request", None),
    (Reply.bad_request(422), "bad_request", None),
    (Reply.unauthorized(), "auth", None),
]


async def test_anthropic_sends_cached_system_and_evidence_blocks_with_the_pinned_model() -> None:
    async with fake_anthropic(api_key="sk-test") as (base_url, upstream):
        provider = AnthropicProvider("sk-test", base_url=base_url)
        upstream.script(Reply.ok('{"answer": "x"}'))
        first = await provider.complete(rag_request(), PINNED)
        second = await provider.complete(rag_request(), PINNED)
        await provider.aclose()

    sent = upstream.requests[0]
    assert sent.path == "/v1/messages"
    assert upstream.presented_key(sent) == "sk-test"
    assert sent.body["model"] == PINNED
    system = sent.body["system"]
    assert [b["cache_control"] for b in system] == [{"type": "ephemeral"}, {"type": "ephemeral"}]
    assert system[0]["text"] == rag_request().system
    assert 'id="guideline:idsa-cap-2019#4.1"' in system[1]["text"]
    assert "amoxicillin 1 g" in system[1]["text"]
    assert sent.body["messages"] == [{"role": "user", "content": rag_request().messages[0].content}]
    assert sent.body["max_tokens"] == TASKS["rag_answer"].max_tokens

    assert first.text == '{"answer": "x"}'
    assert (first.provider, first.model, first.finish_reason) == ("anthropic", PINNED, "end_turn")
    assert first.metadata["response_id"].startswith("msg_fake_")
    assert first.usage.cache_write_tokens > 0 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert second.usage.cache_write_tokens == 0
    assert second.usage.input_tokens > 0 and second.usage.output_tokens > 0


async def test_anthropic_without_evidence_or_task_sends_only_the_system_block() -> None:
    request = CompletionRequest(system="Be brief.", messages=[Message(role="user", content="hello")])
    async with fake_anthropic() as (base_url, upstream):
        provider = AnthropicProvider("k", base_url=base_url)
        response = await provider.complete(request, PINNED)
        await provider.aclose()
    assert upstream.requests[0].body["system"] == [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
    ]
    assert response.text == "ok"


@pytest.mark.parametrize(("reply", "kind", "retry_after"), ERRORS)
async def test_anthropic_maps_http_failures_without_retrying(
    reply: Reply, kind: str, retry_after: float | None
) -> None:
    async with fake_anthropic() as (base_url, upstream):
        provider = AnthropicProvider("k", base_url=base_url)
        upstream.always(reply)
        with pytest.raises(ProviderError) as caught:
            await provider.complete(rag_request(), PINNED)
        await provider.aclose()
    err = caught.value
    assert (err.provider, err.kind, err.retry_after) == ("anthropic", kind, retry_after)
    assert err.falls_back == (kind in ("overloaded", "rate_limited", "server"))
    assert len(upstream.requests) == 1  # max_retries=0: the gateway decides about retries
    assert "amoxicillin" not in str(err)


async def test_anthropic_timeout_and_refused_connection_are_timeouts() -> None:
    async with fake_anthropic() as (base_url, upstream):
        provider = AnthropicProvider("k", base_url=base_url, timeout=0.3)
        upstream.always(Reply.timeout())
        call = asyncio.create_task(provider.complete(rag_request(), PINNED))
        arrived = await upstream.wait_for_requests(1)  # the request reached the upstream, which hangs
        assert arrived[0].body["model"] == PINNED
        with pytest.raises(ProviderError) as caught:
            await call
        await provider.aclose()
    assert caught.value.kind == "timeout" and caught.value.falls_back

    nobody = AnthropicProvider("k", base_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ProviderError) as refused:
        await nobody.complete(rag_request(), PINNED)
    await nobody.aclose()
    assert refused.value.kind == "timeout"


async def test_providers_not_permitted_phi_never_send_it() -> None:
    phi = TASKS["pa_justification"].build_request({"requested_item": "semaglutide"}, EVIDENCE)
    assert phi.contains_phi
    async with fake_anthropic() as (a_url, a_up), fake_openai() as (o_url, o_up):
        anthropic_provider = AnthropicProvider("k", base_url=a_url)  # no BAA by default
        openai_provider = OpenAICompatibleProvider(o_url, phi_permitted=False)
        for provider in (anthropic_provider, openai_provider):
            with pytest.raises(ProviderError) as caught:
                await provider.complete(phi, "m")
            assert caught.value.kind == "bad_request" and not caught.value.falls_back
        baa = AnthropicProvider("k", base_url=a_url, phi_permitted=True)
        await baa.complete(phi, PINNED)
        for p in (anthropic_provider, openai_provider, baa):
            await p.aclose()
    assert len(a_up.requests) == 1 and o_up.requests == []


async def test_openai_compatible_request_shape_and_usage() -> None:
    async with fake_openai(api_key="sk-oa") as (base_url, upstream):
        provider = OpenAICompatibleProvider(base_url, api_key="sk-oa", name="azure_openai")
        upstream.script(Reply.ok("{}", finish_reason="length"))
        response = await provider.complete(rag_request(), "gpt-4o-2024-08-06")
        via_v1 = OpenAICompatibleProvider(base_url + "/v1/", api_key="sk-oa")
        await via_v1.complete(rag_request(), "gpt-4o")
        await provider.aclose()
        await via_v1.aclose()
    sent = upstream.requests[0]
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 2
    assert sent.headers["authorization"] == "Bearer sk-oa"
    assert sent.body["model"] == "gpt-4o-2024-08-06"
    assert sent.body["max_tokens"] == TASKS["rag_answer"].max_tokens and sent.body["temperature"] == 0.0
    system, user = sent.body["messages"]
    assert system["role"] == "system" and system["content"].startswith(rag_request().system)
    assert 'id="guideline:idsa-cap-2019#4.1"' in system["content"]
    assert user == {"role": "user", "content": rag_request().messages[0].content}
    assert (response.provider, response.model, response.finish_reason) == (
        "azure_openai",
        "gpt-4o-2024-08-06",
        "length",
    )
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 1
    assert response.metadata["response_id"].startswith("chatcmpl-fake-")


async def test_openai_compatible_api_key_header_for_azure() -> None:
    async with fake_openai(api_key="azure-key") as (base_url, upstream):
        provider = OpenAICompatibleProvider(base_url, api_key="azure-key", auth_header="api-key")
        await provider.complete(rag_request(), "gpt-4o")
        wrong = OpenAICompatibleProvider(base_url, api_key="other")
        with pytest.raises(ProviderError) as caught:
            await wrong.complete(rag_request(), "gpt-4o")
        await provider.aclose()
        await wrong.aclose()
    assert upstream.requests[0].headers["api-key"] == "azure-key"
    assert caught.value.kind == "auth"


@pytest.mark.parametrize(("reply", "kind", "retry_after"), ERRORS)
async def test_openai_compatible_maps_http_failures(
    reply: Reply, kind: str, retry_after: float | None
) -> None:
    async with fake_openai() as (base_url, upstream):
        provider = OpenAICompatibleProvider(base_url)
        upstream.always(reply)
        with pytest.raises(ProviderError) as caught:
            await provider.complete(rag_request(), "m")
        await provider.aclose()
    assert (caught.value.provider, caught.value.kind, caught.value.retry_after) == (
        "openai_compatible",
        kind,
        retry_after,
    )
    assert len(upstream.requests) == 1


async def test_openai_compatible_timeout_and_latency() -> None:
    async with fake_openai(latency=0.05) as (base_url, upstream):
        slow = OpenAICompatibleProvider(base_url, timeout=5)
        started = time.monotonic()
        assert (await slow.complete(rag_request(), "m")).text == "ok"
        assert time.monotonic() - started >= 0.05
        upstream.always(Reply.timeout())
        impatient = OpenAICompatibleProvider(base_url, timeout=0.3)
        with pytest.raises(ProviderError) as caught:
            await impatient.complete(rag_request(), "m")
        await slow.aclose()
        await impatient.aclose()
    assert caught.value.kind == "timeout"


async def test_an_anthropic_answer_in_task_json_parses_against_its_evidence() -> None:
    request = rag_request()
    drafted = await OfflineProvider().complete(request, "offline-standard")
    async with fake_anthropic() as (base_url, upstream):
        upstream.responder = lambda body: drafted.text  # the upstream answers the grounded draft
        provider = AnthropicProvider("k", base_url=base_url)
        response = await provider.complete(request, PINNED)
        await provider.aclose()
    parsed = parse_output("rag_answer", response, {e.id for e in request.evidence})
    assert isinstance(parsed, RagAnswer)
    assert parsed.citations[0].effective_date == "2019-10-01"
    assert json.loads(response.text) == json.loads(drafted.text)


async def test_malformed_success_bodies_are_server_errors() -> None:
    async with fake_anthropic() as (a_url, a_up), fake_openai() as (o_url, o_up):
        a_up.always(Reply.raw({"type": "message", "unexpected": True}))
        o_up.always(Reply.raw({"choices": []}))
        claude, other = AnthropicProvider("k", base_url=a_url), OpenAICompatibleProvider(o_url)
        for provider, model in ((claude, PINNED), (other, "m")):
            with pytest.raises(ProviderError) as caught:
                await provider.complete(rag_request(), model)
            assert caught.value.kind == "server" and caught.value.falls_back
            await provider.aclose()


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"Retry-After": "12"}) == 12.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    in_a_minute = retry_after_seconds({"retry-after": formatdate(time.time() + 60, usegmt=True)})
    assert in_a_minute is not None and 55 <= in_a_minute <= 61
