"""De-identification (careflow/deid.py): the patient's own identifiers from the EHR in whatever form a
conversation or a note uses them, and pattern matches, become placeholders; clinical content stays;
`leaks()` finds what is left."""

from __future__ import annotations

from datetime import date

import pytest

from careflow.deid import Identifiers, Kind, deidentify, leaks, reidentify
from careflow.fhir.synthetic import patient_bundle

AS_OF = date(2026, 11, 27)


def patient(seed: int, index: int) -> dict:
    _, bundle = patient_bundle(seed, index, AS_OF)
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def planted(p: dict) -> tuple[str, list[str]]:
    """A transcript with the patient's identifiers planted in the forms people say and write them."""
    given, family = p["name"][0]["given"][0], p["name"][0]["family"]
    born = date.fromisoformat(p["birthDate"])
    mrn = p["identifier"][0]["value"]
    phone = p["telecom"][0]["value"]
    digits = "".join(ch for ch in phone if ch.isdigit())
    street, city = p["address"][0]["line"][0], p["address"][0]["city"]
    forms = [
        f"{given} {family}", given.upper(), f"Mrs. {family}", family.lower(),
        born.strftime("%B %-d, %Y"), born.strftime("%m/%d/%Y"), born.isoformat(),
        f"{born.day} {born.strftime('%B %Y')}",
        mrn, " ".join(mrn), f"{digits[:3]}.{digits[3:6]}.{digits[6:]}", phone, street, city,
    ]  # fmt: skip
    text = (
        f"[doctor] Good morning, {forms[0]}. Can you confirm your date of birth? "
        f"[patient] It's {forms[4]}, so {forms[5]} on the forms, or {forms[6]}. I was born {forms[7]}. "
        f"[doctor] And your record number {forms[8]}, that's {forms[9]}? Phone {forms[10]} or {forms[11]}? "
        f"[patient] Yes. I still live at {forms[12]} in {forms[13]}. {forms[1]} is fine, or {forms[2]}, "
        f"my husband calls me {forms[3]}. "
        "[doctor] The chest pain started on June 3rd, worse on exertion. You take metformin 500 mg twice "
        "daily and lisinopril. Blood pressure today is 150/90, potassium 6.9. "
        "Email me at jo.smith@example.org. SSN on file 123-45-6789. We will see you again on 12/14/2026."
    )
    return text, forms


@pytest.mark.parametrize("seed", range(12))
def test_every_planted_identifier_of_the_patient_is_removed(seed: int) -> None:
    p = patient(seed, seed % 3)
    text, forms = planted(p)
    known = Identifiers.of_patient(p)
    out = deidentify(text, known)
    lowered = out.text.lower()
    assert [f for f in forms if f.lower() in lowered] == []
    assert leaks(out.text, known) == []
    for other in ("june 3rd", "12/14/2026", "jo.smith@example.org", "123-45-6789"):
        assert other not in lowered
    for clinical in ("chest pain", "metformin 500 mg twice daily", "lisinopril", "150/90", "potassium 6.9"):
        assert clinical in lowered  # what the note needs is kept
    counts = out.counts()
    assert counts["PATIENT"] >= 4 and counts["DOB"] >= 4 and counts["MRN"] >= 2 and counts["PHONE"] >= 2
    assert counts["DATE"] == 2 and counts["EMAIL"] == 1 and counts["SSN"] == 1 and counts["ADDRESS"] >= 2


def test_a_known_identifier_left_in_the_text_is_a_leak() -> None:
    p = patient(3, 0)
    known = Identifiers.of_patient(p)
    family = p["name"][0]["family"]
    assert leaks(f"[PATIENT] says {family} is her maiden name", known) == [Kind.PATIENT]
    assert leaks("[PATIENT] reports chest pain since [DATE].", known) == []


def test_the_name_and_birth_date_go_back_into_the_note() -> None:
    p = patient(5, 1)
    out = deidentify(f"{p['name'][0]['given'][0]} {p['name'][0]['family']}, born {p['birthDate']}, has CKD.",
                     Identifiers.of_patient(p))  # fmt: skip
    assert out.text == "[PATIENT], born [DOB], has CKD."
    name = f"{p['name'][0]['given'][0]} {p['name'][0]['family']}"
    note = reidentify(out.text, {Kind.PATIENT: name, Kind.DOB: p["birthDate"]})
    assert note == f"{name}, born {p['birthDate']}, has CKD."


def test_a_relatives_name_goes_by_the_word_before_it_and_the_relation_stays() -> None:
    text = "Daughter Anna Novak helps with medications. Her husband, Luis drives. The son's Peter-Moreau."
    out = deidentify(text)
    assert out.text == (
        "Daughter [NAME] helps with medications. Her husband, [NAME] drives. The son's [NAME]."
    )
    assert [r.original for r in out.replacements] == ["Anna Novak", "Luis", "Peter-Moreau"]
    assert deidentify("The daughter drives her.").text == "The daughter drives her."  # no name: nothing


def test_an_email_address_goes_whole_even_when_it_holds_the_patients_name() -> None:
    p = patient(3, 1)
    given, family = p["name"][0]["given"][0].lower(), p["name"][0]["family"].lower()
    out = deidentify(
        f"Portal e-mail {given}.{family}42@example.org, ask {given.capitalize()}.", Identifiers.of_patient(p)
    )
    assert out.text == "Portal e-mail [EMAIL], ask [PATIENT]."


def test_a_relative_who_shares_the_patients_first_name_goes_whole() -> None:
    p = patient(3, 1)
    given = p["name"][0]["given"][0]
    out = deidentify(f"Wife {given} Lindqvist drives. {given} is well.", Identifiers.of_patient(p))
    assert out.text == "Wife [NAME] drives. [PATIENT] is well."
