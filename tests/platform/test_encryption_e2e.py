"""Payloads at rest on the real server are ciphertext; the codec endpoint decodes them for the
authorised; record-history exports them decoded and replayable."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from careflow.config import Settings
from careflow.net import free_port
from starters.clients.history import export_history
from tests.conftest import BIN, ROOT
from tests.support.hold import HoldInput, HoldWorkflow, hold
from tests.support.wait import wait_until
from workers.registry import replayer, sandbox_runner

TOKEN = "test-codec-token"


@pytest.fixture(scope="module")
async def api_url(database_url: str) -> AsyncIterator[str]:
    port = free_port()
    env = dict(os.environ, CAREFLOW_API_PORT=str(port))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starters",
        "api",
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(f"{url}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await wait_until(up, timeout=60, what="API to answer")
        yield url
    finally:
        proc.terminate()
        await proc.wait()


@pytest.fixture
async def finished_workflow(client: Client, task_queue: str, tmp_path: Path) -> tuple[str, str]:
    secret = f"PHI-MARKER-{uuid.uuid4().hex}"
    wid = f"hold-{uuid.uuid4()}"
    (tmp_path / secret).mkdir()
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[HoldWorkflow],
        activities=[hold],
        workflow_runner=sandbox_runner(),
    ):
        await client.execute_workflow(
            HoldWorkflow.run,
            HoldInput(seconds=0, marker_dir=str(tmp_path / secret)),
            id=wid,
            task_queue=task_queue,
        )
    return wid, secret


def temporal_show(client: Client, wid: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_CODEC")}
    return subprocess.run(
        [
            str(BIN / "temporal"),
            "workflow",
            "show",
            "-w",
            wid,
            "-o",
            "json",
            "--no-json-shorthand-payloads",
            "--address",
            client.service_client.config.target_host,
            "-n",
            client.namespace,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def payload_texts(history_json: str) -> list[str]:
    """Every payload's data, base64-decoded, wherever it sits in the history."""
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "metadata" in node and "data" in node:
                out.append(base64.b64decode(node["data"]).decode("latin-1"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(history_json))
    return out


async def test_server_stores_ciphertext_and_codec_endpoint_decodes(
    client: Client, finished_workflow: tuple[str, str], api_url: str
) -> None:
    wid, secret = finished_workflow
    raw = temporal_show(client, wid)
    assert raw.returncode == 0, raw.stderr
    texts = payload_texts(raw.stdout)
    assert texts, "history has payloads"
    assert secret not in raw.stdout and not any(secret in t for t in texts)
    assert "binary/encrypted" in raw.stdout or base64.b64encode(b"binary/encrypted").decode() in raw.stdout

    decoded = temporal_show(
        client, wid, "--codec-endpoint", f"{api_url}/codec", "--codec-auth", f"Bearer {TOKEN}"
    )
    assert decoded.returncode == 0, decoded.stderr
    assert any(secret in t for t in payload_texts(decoded.stdout))


async def test_codec_endpoint_requires_a_token(api_url: str) -> None:
    body = {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                "data": base64.b64encode(b'{"a":1}').decode(),
            }
        ]
    }
    async with httpx.AsyncClient(base_url=api_url) as c:
        assert (await c.post("/codec/decode", json=body)).status_code == 401
        assert (
            await c.post("/codec/decode", json=body, headers={"Authorization": "Bearer wrong"})
        ).status_code == 401
        assert (await c.post("/codec/t/wrong/decode", json=body)).status_code == 401
        enc = await c.post("/codec/encode", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert enc.status_code == 200
        assert base64.b64decode(enc.json()["payloads"][0]["metadata"]["encoding"]) == b"binary/encrypted"
        # the Web UI's form: token in the path
        dec = await c.post(f"/codec/t/{TOKEN}/decode", json=enc.json(), headers={"X-Namespace": "careflow"})
        assert dec.status_code == 200 and dec.json() == body
        # fields a newer Web UI may add are ignored, not a 400
        newer = {**enc.json(), "futureField": 1}
        newer["payloads"] = [{**p, "externalPayloads": []} for p in enc.json()["payloads"]]
        dec2 = await c.post(f"/codec/t/{TOKEN}/decode", json=newer)
        assert dec2.status_code == 200 and dec2.json() == body
        bad = await c.post("/codec/decode", content=b"not json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad.status_code == 400


async def test_cors_preflight_allows_the_web_ui(api_url: str, settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=api_url) as c:
        r = await c.options(
            f"/codec/t/{TOKEN}/decode",
            headers={
                "Origin": settings.temporal_ui_url,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == settings.temporal_ui_url
        evil = await c.options(
            "/codec/decode",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in evil.headers


async def test_record_history_exports_decoded_and_replayable(
    client: Client, finished_workflow: tuple[str, str], tmp_path: Path, settings: Settings
) -> None:
    wid, secret = finished_workflow
    path = await export_history(client, wid, tmp_path / "histories")
    text = path.read_text()
    assert path.name == f"HoldWorkflow-{wid}.json"
    assert "YmluYXJ5L2VuY3J5cHRlZA==" not in text  # base64 of binary/encrypted
    assert any(secret in t for t in payload_texts(text))
    from temporalio.client import WorkflowHistory

    result = await replayer(settings, workflows=[HoldWorkflow]).replay_workflow(
        WorkflowHistory.from_json(wid, text)
    )
    assert result.replay_failure is None
