"""The lab-alert pipeline's identity and the inputs recorded histories hold."""

from careflow.models.lab_alert import (
    PIPELINE,
    WORKFLOW_ID_PREFIX,
    LabAlertInput,
    LabAlertStage,
    LabResult,
    workflow_id,
)

RESULT = LabResult(result_key="k1", patient_id="p", loinc="2823-3", value=6.9, value_text="6.9")


def test_an_input_recorded_before_tenant_id_still_loads() -> None:
    old = {"result": RESULT.model_dump(mode="json"), "tenant": "east"}
    assert LabAlertInput.model_validate(old).tenant_id == "east"
    new = LabAlertInput(result=RESULT, tenant_id="west")
    assert new.model_dump()["tenant_id"] == "west" and "tenant" not in new.model_dump()
    assert LabAlertInput.model_validate(new.model_dump(mode="json")).search_attributes is True


def test_a_sender_waits_until_the_alert_has_gone_out_or_was_not_needed() -> None:
    waiting = {s for s in LabAlertStage if not s.settled}
    assert waiting == {LabAlertStage.RECEIVED, LabAlertStage.ASSESSING}
    assert LabAlertStage("no-alert").settled and LabAlertStage.NO_ALERT == "no-alert"


def test_one_workflow_per_result() -> None:
    assert workflow_id("abc") == "lab-alert-abc" and workflow_id("abc").startswith(WORKFLOW_ID_PREFIX)
    assert PIPELINE == "lab-alert"
