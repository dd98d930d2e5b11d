"""Lab alerting against the seed's SLA (P7): a critical result must reach the physician within 60 s.

Needs the embedded stack with seeded patients (`make run`).  For each load level it sends critical
ORU^R01 messages over MLLP at a fixed rate (the seed's peak, 50/min, and 100x it), each for a seeded
synthetic patient with a unique filler order number, and measures:

- ACK latency: message written -> AA read back (the listener ACKs once the workflow is started);
- posting-to-alert latency: message written -> the physician's push notification recorded;
- sustained messages/s through the listener.

Then it acknowledges every alert it caused, so no workflow is left waiting to escalate.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime

import asyncpg

from careflow.config import Settings, load_settings
from careflow.fhir.synthetic import generate_ehr
from careflow.hl7.mllp import Frame, MllpFramer, wrap
from careflow.hl7.oru import parse_oru
from careflow.idempotency import step_key
from careflow.labs.normalise import results_from_oru
from careflow.models.lab_alert import AlertAck, workflow_id
from careflow.security.temporal import connect
from workflows.lab_alert import LabResultAlertWorkflow

SLA_S = 60.0
PEAK_PER_MIN = 50


def oru(mrn: str, n: int, run: str) -> bytes:
    ts = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return (
        "\r".join(
            [
                f"MSH|^~\\&|LIS|BENCH-LAB|CAREFLOW|HOSPITAL|{ts}||ORU^R01^ORU_R01|B{run}{n}|P|2.5.1",
                f"PID|1||{mrn}^^^HOSPITAL^MR",
                f"OBR|1|ORD{run}{n}|FIL{run}{n}^LIS|2823-3^Potassium^LN|||{ts}",
                f"OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F|||{ts}",
            ]
        )
        + "\r"
    ).encode()


class Sender:
    """One MLLP connection; ACKs come back in order, so a FIFO of send times matches them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pending: asyncio.Queue[float] = asyncio.Queue()
        self.ack_latencies: list[float] = []
        self.framer = MllpFramer()

    async def read_acks(self, expected: int) -> None:
        while len(self.ack_latencies) < expected:
            data = await self.reader.read(65536)
            if not data:
                raise RuntimeError("listener closed the connection")
            for item in self.framer.feed(data):
                if isinstance(item, Frame):
                    sent = await self.pending.get()
                    assert b"MSA|AA|" in item.payload, item.payload[:200]
                    self.ack_latencies.append(time.perf_counter() - sent)


async def run_level(
    settings: Settings,
    pool: asyncpg.Pool,
    mrns: list[str],
    per_min: float,
    duration: float,
    connections: int,
    run: str,
) -> dict[str, float]:
    count = max(1, int(per_min / 60 * duration))
    senders = [
        Sender(*await asyncio.open_connection(settings.hl7_host, settings.hl7_port))
        for _ in range(connections)
    ]
    per_sender = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]
    readers = [asyncio.create_task(s.read_acks(n)) for s, n in zip(senders, per_sender, strict=True)]
    sent_at: dict[str, float] = {}  # result key -> wall-clock send time
    interval = 60.0 / per_min
    start = time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
        msg = oru(mrns[n % len(mrns)], n, run)
        [result] = results_from_oru(parse_oru(msg), datetime.now(UTC))
        sender = senders[n % connections]
        sent_at[result.result_key] = time.time()
        sender.pending.put_nowait(time.perf_counter())
        sender.writer.write(wrap(msg))
    await asyncio.gather(*readers)
    send_window = time.perf_counter() - start
    for s in senders:
        s.writer.close()

    # posting-to-alert: the physician's notification row (written by lab.deliver_alert)
    keys = {step_key(workflow_id(k), "alert-physician"): k for k in sent_at}
    alerted: dict[str, float] = {}
    deadline = time.monotonic() + max(120.0, count / 5)
    while len(alerted) < len(keys) and time.monotonic() < deadline:
        rows = await pool.fetch(
            "SELECT dedup_key, extract(epoch FROM created_at) AS t FROM notifications"
            " WHERE dedup_key = ANY($1)",
            list(set(keys) - set(alerted)),
        )
        for r in rows:
            alerted[r["dedup_key"]] = float(r["t"])
        await asyncio.sleep(0.5)
    alert_lat = sorted(alerted[d] - sent_at[k] for d, k in keys.items() if d in alerted)
    acks = sorted(x for s in senders for x in s.ack_latencies)

    client = await connect(settings)
    for k in sent_at:  # acknowledge, so nothing escalates or waits 24 h
        await client.get_workflow_handle(workflow_id(k)).signal(
            LabResultAlertWorkflow.acknowledge, AlertAck(by="bench")
        )

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    return {
        "sent": count,
        "alerted": len(alert_lat),
        "rate_per_min": per_min,
        "msgs_per_s": count / send_window,
        "ack_p50_ms": pct(acks, 0.5) * 1000,
        "ack_p99_ms": pct(acks, 0.99) * 1000,
        "alert_p50_s": statistics.median(alert_lat) if alert_lat else float("nan"),
        "alert_p99_s": pct(alert_lat, 0.99),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--peak-seconds", type=float, default=60.0, help="duration at 50/min")
    ap.add_argument("--burst-seconds", type=float, default=10.0, help="duration at 100x the peak")
    ap.add_argument("--connections", type=int, default=4)
    args = ap.parse_args()
    settings = load_settings()
    mrns = [p.mrn for p in generate_ehr(args.seed, args.patients, datetime.now(UTC).date()).profiles]
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    run = datetime.now(UTC).strftime("%H%M%S")
    results = []
    for label, per_min, secs in (
        ("peak (50/min)", PEAK_PER_MIN, args.peak_seconds),
        ("100x peak (5000/min)", PEAK_PER_MIN * 100, args.burst_seconds),
    ):
        r = await run_level(settings, pool, mrns, per_min, secs, args.connections, f"{run}{int(per_min)}")
        results.append((label, r))
        print(
            f"{label}: sent {r['sent']}, alerted {r['alerted']}, {r['msgs_per_s']:.1f} msgs/s, "
            f"ACK p50 {r['ack_p50_ms']:.1f} ms p99 {r['ack_p99_ms']:.1f} ms, "
            f"posting-to-alert p50 {r['alert_p50_s']:.2f} s p99 {r['alert_p99_s']:.2f} s "
            f"(p99 = {r['alert_p99_s'] / SLA_S:.3f} x the 60 s SLA)",
            flush=True,
        )
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
