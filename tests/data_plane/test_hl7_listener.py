"""The MLLP listener over real TCP: ACK codes, redelivery, hostile input, no ACK without acceptance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from careflow.hl7.listener import MllpListener, Route
from careflow.hl7.mllp import END, START, Frame, MllpFramer, wrap
from careflow.hl7.oru import OruMessage, parse_oru
from tests.support.hl7_samples import oru


class Recorder:
    """The listener's accept hook: records what was handed on, or fails on demand."""

    def __init__(self) -> None:
        self.accepted: list[OruMessage] = []
        self.fail = False

    async def __call__(self, msg: OruMessage) -> None:
        if self.fail:
            raise ConnectionError("temporal unreachable")
        self.accepted.append(msg)


@pytest.fixture
async def listener() -> AsyncIterator[tuple[MllpListener, Recorder]]:
    rec = Recorder()
    routes = {"ORU^R01": Route(parse_oru, rec)}
    lst = MllpListener(routes, host="127.0.0.1", port=0, max_frame=64 * 1024, idle_timeout=1.0)
    await lst.start()
    yield lst, rec
    await lst.close()


async def connect(lst: MllpListener) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(lst.host, lst.port)


_pending: dict[int, tuple[MllpFramer, list[bytes]]] = {}


async def read_ack(reader: asyncio.StreamReader) -> list[str]:
    """Next ACK on this connection (several may arrive in one read)."""
    framer, queue = _pending.setdefault(id(reader), (MllpFramer(), []))
    while not queue:
        data = await asyncio.wait_for(reader.read(65536), timeout=10)
        assert data, "connection closed before an ACK"
        queue += [f.payload for f in framer.feed(data) if isinstance(f, Frame)]
    return queue.pop(0).decode().rstrip("\r").split("\r")


def msa(ack: list[str]) -> list[str]:
    return next(s for s in ack if s.startswith("MSA|")).split("|")


async def test_oru_in_aa_out_echoing_the_control_id(listener) -> None:  # type: ignore[no-untyped-def]
    lst, rec = listener
    reader, writer = await connect(lst)
    writer.write(wrap(oru("CTRL-1")))
    await writer.drain()
    assert msa(await read_ack(reader))[:3] == ["MSA", "AA", "CTRL-1"]
    assert [m.header.control_id for m in rec.accepted] == ["CTRL-1"]
    writer.close()


async def test_the_same_message_100_times_gets_100_aa(listener) -> None:  # type: ignore[no-untyped-def]
    lst, rec = listener
    reader, writer = await connect(lst)
    for _ in range(100):
        writer.write(wrap(oru("DUP-1")))
    await writer.drain()
    acks = [msa(await read_ack(reader)) for _ in range(100)]
    assert all(a[1:3] == ["AA", "DUP-1"] for a in acks)
    # Deduplication is the workflow id's job (one workflow per result key): every copy is handed on.
    assert len(rec.accepted) == 100
    writer.close()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"MSH|^~\\&|LAB|H\rPID|garbage", "AR"),
        (b"\x00\xff\xfe garbage \x01", "AR"),
        (b"PID|1||X", "AR"),
        (b"MSH|#~\\&|LAB|H|C|H|2026||ORU^R01|9|P|2.5", "AR"),
        (oru("ADT-1", message_type="ADT^A01"), "AE"),
    ],
)
async def test_bad_messages_get_ar_or_ae_and_the_connection_carries_on(
    listener, payload: bytes, code: str
) -> None:  # type: ignore[no-untyped-def]
    lst, rec = listener
    reader, writer = await connect(lst)
    writer.write(wrap(payload) + wrap(oru("AFTER")))
    await writer.drain()
    assert msa(await read_ack(reader))[1] == code
    assert msa(await read_ack(reader))[1:3] == ["AA", "AFTER"]
    assert [m.header.control_id for m in rec.accepted] == ["AFTER"]
    writer.close()


async def test_a_10_mb_frame_is_refused_without_buffering_it(listener) -> None:  # type: ignore[no-untyped-def]
    lst, rec = listener
    reader, writer = await connect(lst)
    big = oru("BIG-1") + b"OBX|2|TX|X^Y^LN||" + b"A" * (10 * 1024 * 1024) + b"\r"
    writer.write(wrap(big))
    writer.write(wrap(oru("SMALL-1")))
    await writer.drain()
    first = await read_ack(reader)
    assert msa(first)[:3] == ["MSA", "AR", "BIG-1"] and "exceeds" in msa(first)[3]
    assert msa(await read_ack(reader))[1:3] == ["AA", "SMALL-1"]
    assert [m.header.control_id for m in rec.accepted] == ["SMALL-1"]
    writer.close()


async def test_a_client_that_stalls_mid_frame_is_dropped_and_others_are_served(listener) -> None:  # type: ignore[no-untyped-def]
    lst, rec = listener
    stall_reader, stall_writer = await connect(lst)
    stall_writer.write(START + oru("STALL")[:40])  # then silence
    await stall_writer.drain()
    reader, writer = await connect(lst)
    writer.write(wrap(oru("OTHER")))
    await writer.drain()
    assert msa(await read_ack(reader))[1:3] == ["AA", "OTHER"]
    # The stalled connection is closed by the server after the idle timeout, never ACKed.
    assert await asyncio.wait_for(stall_reader.read(), timeout=10) == b""
    assert lst.stats.timeouts >= 1
    assert [m.header.control_id for m in rec.accepted] == ["OTHER"]
    writer.close()


async def test_truncated_frame_then_a_good_one(listener) -> None:  # type: ignore[no-untyped-def]
    lst, rec = listener
    reader, writer = await connect(lst)
    writer.write(START + oru("CUT")[:30] + wrap(oru("WHOLE")))
    await writer.drain()
    assert msa(await read_ack(reader))[1:3] == ["AA", "WHOLE"]
    assert [m.header.control_id for m in rec.accepted] == ["WHOLE"]
    writer.close()


async def test_no_ack_when_the_message_cannot_be_durably_accepted(listener) -> None:  # type: ignore[no-untyped-def]
    lst, rec = listener
    rec.fail = True
    reader, writer = await connect(lst)
    writer.write(wrap(oru("LATER")))
    await writer.drain()
    # The sender gets no ACK and the connection closes, so it resends; nothing is lost.
    assert await asyncio.wait_for(reader.read(), timeout=10) == b""
    assert lst.stats.unacknowledged == 1
    rec.fail = False
    reader, writer = await connect(lst)
    writer.write(wrap(oru("LATER")))
    await writer.drain()
    assert msa(await read_ack(reader))[1:3] == ["AA", "LATER"]
    writer.close()


async def test_end_marker_split_across_packets(listener) -> None:  # type: ignore[no-untyped-def]
    lst, rec = listener
    reader, writer = await connect(lst)
    raw = START + oru("SPLIT") + END
    for i in range(0, len(raw), 7):
        writer.write(raw[i : i + 7])
        await writer.drain()
    assert msa(await read_ack(reader))[1:3] == ["AA", "SPLIT"]
    assert [m.header.control_id for m in rec.accepted] == ["SPLIT"]
    writer.close()


async def test_each_message_type_goes_to_its_own_route_and_others_get_ae() -> None:
    from careflow.hl7.adt import DischargeEvent, parse_adt_a03
    from tests.support.hl7_samples import adt_a03

    labs, discharges = Recorder(), []

    async def discharged(event: DischargeEvent) -> None:
        discharges.append(event)

    routes = {"ORU^R01": Route(parse_oru, labs), "ADT^A03": Route(parse_adt_a03, discharged)}
    lst = MllpListener(routes, host="127.0.0.1", port=0)
    await lst.start()
    try:
        reader, writer = await connect(lst)
        writer.write(
            wrap(oru("LAB-1")) + wrap(adt_a03("ADT-1")) + wrap(adt_a03("ADT-2", message_type="ADT^A08"))
        )
        await writer.drain()
        assert msa(await read_ack(reader))[1:3] == ["AA", "LAB-1"]
        assert msa(await read_ack(reader))[1:3] == ["AA", "ADT-1"]
        refused = await read_ack(reader)
        assert msa(refused)[1:3] == ["AE", "ADT-2"]
        assert any("ADT A03, ORU R01" in seg for seg in refused)  # says which types it takes (^ escaped)
        writer.close()
    finally:
        await lst.close()
    assert [m.header.control_id for m in labs.accepted] == ["LAB-1"]
    assert [(d.header.control_id, d.visit_number) for d in discharges] == [("ADT-1", "V-7781")]
