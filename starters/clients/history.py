"""Export a workflow's history as JSON for replay tests, payloads decoded.

Histories in tests/histories/ must replay on any machine, whatever key encrypted them, so the
export runs every payload through the codec first.  Only record workflows that ran on synthetic
data: a decoded history holds the workflow's inputs and results in the clear.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.converter import PayloadCodec

PAYLOAD = Payload.DESCRIPTOR.full_name
PAYLOADS = Payloads.DESCRIPTOR.full_name


async def decode_payloads_in(msg: Message, codec: PayloadCodec) -> None:
    """Decode, in place, every Payload anywhere inside a protobuf message."""
    for field, value in msg.ListFields():
        mtype = field.message_type
        if mtype is None:
            continue
        if mtype.GetOptions().map_entry:
            value_field = mtype.fields_by_name["value"]
            if value_field.message_type is None:
                continue
            for key in list(value):
                if value_field.message_type.full_name == PAYLOAD:
                    value[key].CopyFrom((await codec.decode([value[key]]))[0])
                else:
                    await decode_payloads_in(value[key], codec)
        elif mtype.full_name == PAYLOADS:
            decoded = await codec.decode(list(value.payloads))
            del value.payloads[:]
            value.payloads.extend(decoded)
        elif mtype.full_name == PAYLOAD:
            if field.is_repeated:
                decoded = await codec.decode(list(value))
                del value[:]
                value.extend(decoded)
            else:
                value.CopyFrom((await codec.decode([value]))[0])
        elif field.is_repeated:
            for item in value:
                await decode_payloads_in(item, codec)
        else:
            await decode_payloads_in(value, codec)


async def export_history(client: Client, workflow_id: str, out_dir: Path, run_id: str | None = None) -> Path:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    history = await handle.fetch_history()
    codec = client.data_converter.payload_codec
    if codec is not None:
        for event in history.events:
            await decode_payloads_in(event, codec)
    first = history.events[0].workflow_execution_started_event_attributes
    path = out_dir / f"{first.workflow_type.name}-{workflow_id}.json"
    await asyncio.to_thread(_write, path, history.to_json())
    return path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
