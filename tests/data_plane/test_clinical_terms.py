"""The semantic cache's guard: clinically decisive terms of a question, canonical across synonyms."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from careflow.kb import clinical_terms as ct
from careflow.kb.clinical_terms import cache_key_text, canonical_question, decisive_terms, guard_agrees


def _synonyms(group: str, table: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    return [
        (phrase, f"{group}:{name}")
        for name, synonyms in table.items()
        for phrase in (name, *synonyms)
        if ct._normalise(phrase) not in ct._AMBIGUOUS_LOWER
    ]


ALL_SYNONYMS = [pair for group, table in ct._GROUPS for pair in _synonyms(group, dict(table))]


@pytest.mark.parametrize(("phrase", "term"), ALL_SYNONYMS, ids=[p for p, _ in ALL_SYNONYMS])
def test_every_synonym_maps_to_its_canonical_term(phrase: str, term: str) -> None:
    assert term in decisive_terms(f"What about {phrase} today?")


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is the first-line antibiotic for CAP?", {"condition:community-acquired pneumonia"}),
        (
            "First-line antibiotic for CAP in penicillin allergy?",
            {"condition:community-acquired pneumonia", "drug:penicillin", "population:allergy"},
        ),
        (
            "Can I give Eliquis to a pregnant woman with a DVT?",
            {"drug:apixaban", "population:pregnancy", "condition:deep vein thrombosis"},
        ),
        (
            "What is NOT recommended for DKA in children?",
            {"condition:diabetic ketoacidosis", "negation", "population:pediatric"},
        ),
        (
            "Enoxaparin 40 mg SC daily for VTE prophylaxis when CrCl < 30 mL/min",
            {
                "drug:enoxaparin",
                "quantity:40mg",
                "route:subcutaneous",
                "frequency:1/d",
                "condition:venous thromboembolism",
                "modifier:prophylaxis",
                "population:renal impairment",
                "compare:<",
                "quantity:30ml/min",
            },
        ),
        ("Dose of an SGLT2 inhibitor in HFrEF", {"drug-class:sglt2 inhibitor", "condition:hfref"}),
        (
            "oral vanc for C. diff",
            {"route:oral", "drug:vancomycin", "condition:clostridioides difficile infection"},
        ),
        (
            "AF anticoagulation after an MI",
            {"condition:atrial fibrillation", "drug-class:anticoagulant", "condition:myocardial infarction"},
        ),
    ],
)
def test_decisive_terms_of_typical_questions(question: str, expected: set[str]) -> None:
    assert decisive_terms(question) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the first-line antibiotic for CAP?", "first line abx for community acquired pneumonia"),
        ("Heparin dosing for PE", "How do I dose unfractionated heparin in pulmonary embolism?"),
        ("Reversal of Eliquis bleeding", "how to reverse apixaban in a major bleed"),
        ("AKI with hyperkalaemia", "acute kidney injury and high potassium"),
        ("Outpatient CAP without comorbidities", "CAP in a previously healthy outpatient"),
        ("1 g ceftriaxone", "ceftriaxone 1000 mg"),
        ("vancomycin q8h", "vancomycin every 8 hours"),
        ("Is warfarin safe when breastfeeding?", "Warfarin during lactation: safe?"),
    ],
)
def test_paraphrases_agree(a: str, b: str) -> None:
    assert guard_agrees(a, b), (decisive_terms(a), decisive_terms(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("First-line antibiotic for CAP?", "First-line antibiotic for CAP in penicillin allergy?"),
        ("Is ceftriaxone safe in pregnancy?", "Is ceftriaxone safe in children?"),
        ("Enoxaparin dose for VTE prophylaxis", "Enoxaparin dose for VTE prophylaxis in dialysis"),
        ("Which drugs are recommended in HFrEF?", "Which drugs are not recommended in HFrEF?"),
        ("Apixaban reversal", "Dabigatran reversal"),
        ("Ceftriaxone 1 g daily", "Ceftriaxone 2 g daily"),
        ("Antibiotic duration for CAP: 5 days?", "Antibiotic duration for CAP: 7 days?"),
        ("Empiric therapy for CAP on the ward", "Empiric therapy for CAP in the ICU"),
        ("Treatment of uncomplicated UTI", "Treatment of complicated UTI"),
        ("First-line treatment of C. diff", "Second-line treatment of C. diff"),
        ("Treatment of UTI in pregnant women", "Treatment of UTI in non-pregnant women"),
        ("Oral vancomycin for C. diff", "IV vancomycin for C. diff"),
        ("Sepsis fluids", "Septic shock fluids"),
        ("Potassium above 6.5", "Potassium below 6.5"),
    ],
)
def test_distractors_disagree(a: str, b: str) -> None:
    assert not guard_agrees(a, b), decisive_terms(a)


def test_query_texts_spell_out_abbreviations_and_shorthand() -> None:
    assert canonical_question("First-line abx for CAP in PCN allergy") == (
        "first-line antibiotics for community-acquired pneumonia in penicillin allergy"
    )
    assert cache_key_text("What is the first-line abx for CAP w/o comorbidities?") == (
        "first-line antibiotics community-acquired pneumonia without comorbidities"
    )


# -- properties -----------------------------------------------------------------------------------

_DRUG_SYNONYMS = [(name, s) for name, syns in ct.DRUGS.items() for s in syns if len(s) > 3]
_CONDITIONS = sorted(ct.CONDITIONS)
_POPULATION_PHRASES = [
    "in pregnancy",
    "in children",
    "with CKD",
    "in the elderly",
    "with penicillin allergy",
    "with liver cirrhosis",
    "while breastfeeding",
    "in a neonate",
]
_FILLER = st.sampled_from(["What is", "Please tell me", "Remind me of", "Quick question:", "On rounds:"])


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_fails_and_agrees_with_itself(text: str) -> None:
    assert guard_agrees(text, text)
    assert decisive_terms(text) == decisive_terms(f"  {text}  ")


@settings(max_examples=150, deadline=None)
@given(_FILLER, st.sampled_from(_DRUG_SYNONYMS), st.sampled_from(_CONDITIONS))
def test_brand_and_generic_names_agree(filler: str, drug: tuple[str, str], condition: str) -> None:
    generic, brand = drug
    a = f"{filler} the dose of {generic} for {condition}?"
    b = f"{filler} the dose of {brand.upper()} for {condition}?"
    assert guard_agrees(a, b)


@settings(max_examples=150, deadline=None)
@given(
    _FILLER,
    st.sampled_from(sorted(ct.DRUGS)),
    st.sampled_from(_CONDITIONS),
    st.sampled_from(_POPULATION_PHRASES),
)
def test_a_special_population_changes_the_terms(
    filler: str, drug: str, condition: str, population: str
) -> None:
    base = f"{filler} the dose of {drug} for {condition}"
    # "cirrhosis ... with liver cirrhosis" adds no population: the condition already names it.
    assume(not decisive_terms(population) <= decisive_terms(base))
    assert not guard_agrees(base, f"{base} {population}")


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(ct.DRUGS)),
    st.sampled_from(_CONDITIONS),
    st.sampled_from(["not", "never", "contraindicated", "avoided"]),
)
def test_negation_changes_the_terms(drug: str, condition: str, negation: str) -> None:
    assert not guard_agrees(f"Is {drug} used in {condition}?", f"Is {drug} {negation} in {condition}?")


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(ct.DRUGS)),
    st.integers(1, 2000),
    st.integers(1, 2000),
    st.sampled_from(["mg", "mcg", "units", "mg/kg"]),
)
def test_doses_agree_only_when_equal(drug: str, x: int, y: int, unit: str) -> None:
    agrees = guard_agrees(f"{drug} {x} {unit} twice daily", f"{drug} {y}{unit} BID")
    assert agrees == (x == y)
