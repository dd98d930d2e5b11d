import io
import json
import logging
import sys

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from careflow.security.logging import REDACTED, configure_logging, get_logger


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_phi_fields_are_dropped_even_nested() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    get_logger("t").info(
        "fetched patient",
        patient_id="p-1",
        name="Jane Roe",
        mrn="12345",
        resource={"birthDate": "1950-01-01", "id": "p-1", "telecom": [{"value": "555-0100"}]},
    )
    [rec] = lines(out)
    assert rec["patient_id"] == "p-1"
    assert rec["name"] == REDACTED and rec["mrn"] == REDACTED
    assert rec["resource"]["birthDate"] == REDACTED and rec["resource"]["id"] == "p-1"
    assert "Jane" not in out.getvalue() and "555-0100" not in out.getvalue()


def test_stdlib_logs_render_as_json_and_are_scrubbed() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logging.getLogger("some.library").warning("retrying", extra={"ssn": "123-45-6789", "attempt_no": 2})
    [rec] = lines(out)
    assert rec["event"] == "retrying" and rec["ssn"] == REDACTED and rec["attempt_no"] == 2


async def test_activity_lines_carry_workflow_and_attempt() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)

    @activity.defn(name="demo")
    async def demo() -> None:
        get_logger("t").info("step done", order_id="o-1")

    await ActivityEnvironment().run(demo)
    [rec] = lines(out)
    assert rec["workflow_id"] == "test" and rec["activity_type"] == "unknown"
    assert rec["attempt"] == 1 and rec["order_id"] == "o-1" and "run_id" in rec


def test_access_log_drops_query_strings_and_codec_tokens() -> None:
    configure_logging("INFO", "json", stream=io.StringIO())
    access = logging.getLogger("uvicorn.access")  # configure_logging installs the filter here

    def rendered(path: str) -> str:
        record = access.makeRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5", "GET", path, "1.1", 200),
            None,
        )
        assert access.filter(record)
        return record.getMessage()

    fhir = rendered("/fhir/r4/Patient?identifier=MRN-424242")
    assert "/fhir/r4/Patient" in fhir and "MRN-424242" not in fhir
    codec = rendered("/codec/t/s3cr3t-token/decode")
    assert "/codec/t/[redacted]/decode" in codec and "s3cr3t-token" not in codec


def test_logs_follow_stderr_when_it_is_swapped_and_the_old_one_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO", "json")
    monkeypatch.setattr(sys, "stderr", second)
    first.close()  # what a test's capture does when it ends
    get_logger("careflow.test").info("after the swap", workflow_id="w-1")
    logging.getLogger("temporalio.test").warning("stdlib after the swap")
    assert "after the swap" in second.getvalue() and "stdlib after the swap" in second.getvalue()
