"""Ambient notes against the seed's targets (P4, P14).  Figures are printed with their ratio to the goal,
never asserted.

Quality (no servers): `--encounters` synthetic visits (default 20, over the four specialties, 2-15
minutes each) scripted from synthetic EHR patients' own charts, spoken by espeak-ng in two voices with
room noise, then run through the same code the workflow's activities run:
- speech to text (faster-whisper, the default Whisper base, int8 on this CPU) with the medical
  vocabulary (the patient's conditions and medicines, the specialty's terms) as an initial prompt, as
  faster-whisper's hotwords, and without it: WER against the script (jiwer; lower case, no
  punctuation), goal <= 15 %;
- diarization (resemblyzer, the physician's enrolled voice): DER against the scripted turns
  (pyannote.metrics, 0.25 s collar), goal <= 10 %, and the share of speech given the wrong role;
- processing time / audio duration (speech to text + diarization), goal <= 0.25;
- de-identification: the patient's identifiers (name, birth date) still in what would reach the gateway,
  goal 0;
- the SOAP note (the offline engine, as the gateway runs it) and its ICD-10-CM candidates, validated
  against the code set: precision and recall against the conditions the visit discussed, invalid codes.

Latency (`--pipeline`; needs the stack and seeded patients: `make demo-ambient`): `--visits` recordings
uploaded through the real workers at once; encounter end -> note in the EHR (p50, p95, max) against
the 60-minute SLA, and what the measured speed means for 200 physicians x 10 visits a day.

    .venv/bin/python -m bench.ambient_bench [--encounters 20] [--seed 11]
    .venv/bin/python -m bench.ambient_bench --pipeline [--visits 6] [--minutes 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

GOAL_WER = 0.15
GOAL_DER = 0.10
GOAL_RTF = 0.25
SLA_MINUTES = 60.0
MODES = ("off", "prompt", "hotwords")  # how the vocabulary reaches the decoder (CAREFLOW_STT_VOCABULARY)
DEFAULT_MINUTES = (2, 3, 4, 5, 2, 3, 4, 6, 2, 3, 5, 8, 2, 4, 6, 10, 3, 5, 8, 15)
AS_OF = date(2026, 11, 27)


def ratio(value: float, goal: float) -> str:
    return f"{value / goal:.2f}x the goal" if goal else "-"


@dataclass
class Result:
    specialty: str
    audio_s: float
    wer: dict[str, float]  # by vocabulary mode: off, prompt (the default), hotwords
    stt_s: float
    diar_s: float
    der: dict[str, float]
    role_error: float
    leaked: int
    precision: float | None
    recall: float
    invalid: int


def _wer(reference: str, hypothesis: str) -> float:
    import jiwer

    norm = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    return float(jiwer.wer(reference, hypothesis, reference_transform=norm, hypothesis_transform=norm))


def _der(turns: list[tuple[float, float, Any]], lines: list[Any]) -> tuple[dict[str, float], float]:
    """DER (optimal speaker mapping, 0.25 s collar) with its parts (confusion, missed speech, false
    alarm, each over the reference speech) and the share of reference speech whose role (doctor /
    patient, no mapping) is wrong."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = Annotation(), Annotation()
    for a, b, who in turns:
        ref[Segment(a, b)] = who.value
    for x in lines:  # the diarized transcript's lines, as the workflow stores them
        if x.end > x.start:
            hyp[Segment(x.start, x.end)] = x.speaker
    parts = DiarizationErrorRate(collar=0.25)(ref, hyp, detailed=True)
    total_ref = parts["total"] or 1.0
    der = {
        "der": float(parts["diarization error rate"]),
        "confusion": parts["confusion"] / total_ref,
        "missed": parts["missed detection"] / total_ref,
        "false alarm": parts["false alarm"] / total_ref,
    }
    wrong = total = 0.0
    for a, b, who in turns:
        total += b - a
        for x in lines:
            overlap = min(b, x.end) - max(a, x.start)
            if overlap > 0 and x.speaker != who.value:
                wrong += overlap
    return der, wrong / total if total else 0.0


def quality(n: int, seed: int, wpm: int) -> None:
    from careflow import deid
    from careflow.ambient import diarize, icd10, note, stt, tts
    from careflow.ambient.encounters import Speaker, Specialty, chart, encounter
    from careflow.ambient.transcript import Line, Transcript
    from careflow.config import Settings
    from careflow.fhir import codes as c
    from careflow.fhir.synthetic import patient_bundle
    from careflow.llm.providers.offline import draft_soap_note
    from careflow.llm.tasks import SoapNoteInput
    from careflow.llm.types import Evidence

    settings = Settings()
    print(f"speech: espeak-ng at {wpm} words/min, two voices, room noise at -45 dBFS")
    t0 = time.perf_counter()
    model = stt.load_model(stt.model_path(settings.stt_model, settings.state_dir / "models"))
    enc = diarize.encoder()
    print(
        f"models loaded in {time.perf_counter() - t0:.1f} s (Whisper: {settings.stt_model or 'base, int8'})"
    )
    profile = diarize.embed(
        enc,
        tts.speak(
            "Good morning. Let me listen to your chest. We will review the results next week.",
            tts.VOICES[Speaker.DOCTOR],
        ),
    )
    specialties = list(Specialty)
    results: list[Result] = []
    for i in range(n):
        spec = specialties[i % len(specialties)]
        minutes = DEFAULT_MINUTES[i % len(DEFAULT_MINUTES)]
        _, bundle = patient_bundle(seed, i, AS_OF)
        resources = [e["resource"] for e in bundle["entry"]]
        patient, conditions, meds = chart(resources)
        visit = encounter(patient, conditions, meds, spec, minutes, seed=seed * 1000 + i)
        spoken = tts.speak_turns(visit.turns, noise_db=-45.0, seed=i, words_per_minute=wpm)
        reference = " ".join(t.text for t in visit.turns)
        in_record = [k for k in conditions if k in c.CONDITIONS]
        vocabulary = list(
            dict.fromkeys(
                [c.CONDITIONS[k].icd10_display.split(",")[0] for k in in_record]
                + [c.MEDICATIONS[m].display for m in meds]
                + list(note.TERMS[spec])
            )
        )

        texts, timing = {}, {}
        for mode in MODES:  # the product's mode (settings.stt_vocabulary) is what is diarized and drafted
            t = time.perf_counter()
            segments = list(stt.transcribe(model, spoken.audio, vocabulary=vocabulary, vocabulary_mode=mode))
            timing[mode] = time.perf_counter() - t
            texts[mode] = " ".join(x.text for x in segments)
            if mode == settings.stt_vocabulary:
                used = segments
        stt_s = timing[settings.stt_vocabulary]
        lines = [Line(x.start, x.end, x.text, words=list(x.words)) for x in used]
        t = time.perf_counter()
        found = diarize.label(enc, spoken.audio, lines, profile)
        diar_s = time.perf_counter() - t
        der, role_error = _der(spoken.turns, found.lines)

        known = deid.Identifiers.of_patient(patient)
        labelled = Transcript("bench", found.lines).labelled()
        clean = deid.deidentify(labelled, known)
        name = f"{patient['name'][0]['given'][0]} {patient['name'][0]['family']}".lower()
        leaked = len(deid.leaks(clean.text, known)) + (name in clean.text.lower())

        evidence = [Evidence(id="transcript", kind="transcript", text=clean.text)]
        evidence += [
            Evidence(
                id=f"Condition/{k}",
                kind="fhir",
                title=c.CONDITIONS[k].icd10_display,
                text=f"{c.CONDITIONS[k].icd10_display} (ICD-10-CM {c.CONDITIONS[k].icd10})",
            )
            for k in in_record
        ]
        drafted = draft_soap_note(
            SoapNoteInput(specialty=spec.value, template=list(note.TEMPLATES[spec])), evidence
        )
        kept, dropped = icd10.validate([s.code for s in drafted.icd10_suggestions])
        got, want = {k.code for k in kept}, set(visit.expected_codes)
        precision = len(got & want) / len(got) if got else None
        recall = len(got & want) / len(want) if want else 1.0
        r = Result(
            spec.value,
            spoken.seconds,
            {mode: _wer(reference, text) for mode, text in texts.items()},
            stt_s,
            diar_s,
            der,
            role_error,
            leaked,
            precision,
            recall,
            len(dropped),
        )
        results.append(r)
        print(
            f"{i + 1:2d}. {spec.value:12s} {spoken.seconds / 60:5.1f} min  WER "
            + " ".join(f"{m} {w:5.1%}" for m, w in r.wer.items())
            + f"  DER {der['der']:5.1%} (missed {der['missed']:.1%})"
            f"  RTF {(stt_s + diar_s) / spoken.seconds:.3f}"
            + f"  codes {sorted(got)} vs {sorted(want)}  leaked {leaked}"
        )

    audio = sum(r.audio_s for r in results)
    wer = {m: statistics.mean(r.wer[m] for r in results) for m in MODES}
    default = wer[settings.stt_vocabulary]
    der = {k: sum(r.der[k] * r.audio_s for r in results) / audio for k in results[0].der}
    role = sum(r.role_error * r.audio_s for r in results) / audio
    rtf = sum(r.stt_s + r.diar_s for r in results) / audio
    precisions = [r.precision for r in results if r.precision is not None]
    print(
        f"\n{len(results)} encounters, {audio / 60:.1f} min of audio, "
        f"{len({r.specialty for r in results})} specialties"
    )
    print(
        f"WER with the vocabulary as an initial prompt {wer['prompt']:.1%}, "
        f"as hotwords {wer['hotwords']:.1%}, without it {wer['off']:.1%}; "
        + f"the default ({settings.stt_vocabulary}) {default:.1%} "
        f"(goal <= {GOAL_WER:.0%}: {ratio(default, GOAL_WER)})"
    )
    print(
        f"DER {der['der']:.1%} (goal <= {GOAL_DER:.0%}: {ratio(der['der'], GOAL_DER)}): speaker confusion "
        f"{der['confusion']:.1%}, missed speech {der['missed']:.1%}, false alarm {der['false alarm']:.1%}; "
        f"speech given the wrong role {role:.1%}"
    )
    print(
        f"processing / audio {rtf:.3f} (goal <= {GOAL_RTF}: {ratio(rtf, GOAL_RTF)}): speech to text "
        f"{sum(r.stt_s for r in results) / audio:.3f}, "
        f"diarization {sum(r.diar_s for r in results) / audio:.3f}"
    )
    print(
        f"ICD-10-CM candidates: precision {statistics.mean(precisions) if precisions else 0:.2f}, recall "
        f"{statistics.mean(r.recall for r in results):.2f}; invalid codes {sum(r.invalid for r in results)}"
    )
    print(f"patient identifiers that would reach the gateway: {sum(r.leaked for r in results)} (goal 0)")


async def pipeline(visits: int, minutes: float, seed: int) -> None:
    from careflow.ambient import tts
    from careflow.config import load_settings
    from careflow.models.ambient import AmbientStage, Consent, NoteSource, Specialty
    from careflow.phi_store import PhiStore
    from careflow.security.logging import configure_logging
    from starters.cli.common import cli_connect
    from starters.clients import ambient as client_of
    from starters.demos.ambient import pick_visits

    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    client = await cli_connect(settings)
    plan = [(list(Specialty)[n % 4], "audio") for n in range(visits)]
    chosen = await pick_visits(settings, client, minutes, plan)
    phi = PhiStore.of(settings)
    refs = []
    for v in chosen:
        spoken = tts.speak_turns(v.script.turns, noise_db=-45.0)
        refs.append(
            (
                v.encounter_id,
                v.physician_id,
                v.script,
                phi.put("audio", tts.to_flac(spoken.audio)).ref,
                spoken.seconds,
            )
        )
    print(
        f"{len(refs)} recordings of {minutes} min ({sum(r[4] for r in refs) / 60:.1f} min of audio), "
        "uploaded at once"
    )
    t0 = time.perf_counter()
    wids = []
    for encounter_id, physician, script, ref, _ in refs:
        started = await client_of.submit(
            client,
            f"{encounter_id}",
            NoteSource.AUDIO,
            ref,
            specialty=script.specialty,
            consent=Consent(granted=True, recorded_by=physician),
        )
        wids.append(started.workflow_id)
    done = await asyncio.gather(
        *(
            client_of.wait_for(
                client,
                w,
                lambda s: s.stage is AmbientStage.AWAITING_SIGNATURE or s.stage.settled,
                timeout=3600,
            )
            for w in wids
        )
    )
    wall = time.perf_counter() - t0
    ready = sorted(s.note_ready_minutes for s in done if s.note_ready_minutes is not None)
    if not ready:
        print("no note reached the EHR:", [s.stage.value + ": " + s.reason for s in done])
        return
    p95 = ready[min(len(ready) - 1, round(0.95 * (len(ready) - 1)))]
    print(
        f"encounter end -> note in the EHR: p50 {statistics.median(ready):.2f} min, p95 {p95:.2f}, "
        f"max {ready[-1]:.2f} "
        f"(SLA {SLA_MINUTES:.0f} min: p95 {p95 / SLA_MINUTES:.3f}x); all {len(wids)} in {wall:.0f} s"
    )
    rtfs = [s.transcript.processing_seconds / s.transcript.audio_seconds for s in done if s.transcript]
    rtf = statistics.mean(rtfs)
    daily_audio_h = 200 * 10 * 16.5 / 60  # 200 physicians x 10 visits of 8-25 (mean 16.5) minutes
    print(
        f"speech to text under this load: RTF {rtf:.3f}; 200 physicians x 10 visits/day = "
        f"{daily_audio_h:.0f} h of "
        f"audio/day = {daily_audio_h * rtf:.0f} worker-hours of STT at this speed "
        f"({daily_audio_h * rtf / 10:.1f} STT workers like this one over a 10-hour clinic day)"
    )
    for w, s in zip(wids, done, strict=True):
        print(f"  {w}: {s.stage.value}, ready {s.note_ready_minutes} min; {settings.workflow_url(w)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encounters", type=int, default=20)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--pipeline", action="store_true")
    p.add_argument("--visits", type=int, default=6)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--wpm", type=int, default=150, help="espeak-ng's speaking rate (150: conversational)")
    a = p.parse_args()
    if a.pipeline:
        asyncio.run(pipeline(a.visits, a.minutes, a.seed))
    else:
        quality(a.encounters, a.seed, a.wpm)


if __name__ == "__main__":
    Path(".careflow").mkdir(exist_ok=True)
    main()
