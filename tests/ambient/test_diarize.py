"""Diarization (careflow/ambient/diarize.py) on real speech: a visit spoken by espeak-ng in two voices
(careflow/ambient/tts.py), cut at the reference turns, labelled by resemblyzer's embeddings: with the
physician's enrolled voice and, without it, by turn-taking."""

from __future__ import annotations

import numpy as np
import pytest

from careflow.ambient import diarize, tts
from careflow.ambient.encounters import Speaker, Turn
from careflow.ambient.stt import SAMPLE_RATE
from careflow.ambient.transcript import DOCTOR, PATIENT, Line

TURNS = [
    Turn(Speaker.DOCTOR, "Good morning. What brings you in today?"),
    Turn(Speaker.PATIENT, "My lower back has been aching for three weeks."),
    Turn(Speaker.DOCTOR, "Does the pain go down your leg?"),
    Turn(Speaker.PATIENT, "No, it stays in my back, mostly in the mornings."),
    Turn(Speaker.DOCTOR, "Any numbness or weakness in your legs?"),
    Turn(Speaker.PATIENT, "No, none at all, I can walk fine."),
    Turn(Speaker.DOCTOR, "Stay active, use heat, and come back if it gets worse."),
]


@pytest.fixture(scope="module")
def visit() -> tts.Spoken:
    return tts.speak_turns(TURNS, noise_db=-50.0)


@pytest.fixture(scope="module")
def encoder() -> object:
    return diarize.encoder()


def lines(spoken: tts.Spoken) -> list[Line]:
    return [Line(a, b, t.text) for (a, b, _), t in zip(spoken.turns, TURNS, strict=True)]


def test_the_recording_holds_each_turn_in_its_speakers_voice(visit: tts.Spoken) -> None:
    assert [s for _, _, s in visit.turns] == [t.speaker for t in TURNS]
    assert 10 < visit.seconds < 40 and visit.audio.dtype == np.float32
    assert all(b - a > 1.0 for a, b, _ in visit.turns)
    flac = tts.to_flac(visit.audio)
    assert flac.startswith(b"fLaC") and len(flac) < visit.seconds * SAMPLE_RATE * 2  # compressed


def test_the_enrolled_voice_names_the_physician(visit: tts.Spoken, encoder: object) -> None:
    profile = diarize.embed(
        encoder, tts.speak("Let me listen to your chest. Breathe in.", tts.VOICES[Speaker.DOCTOR])
    )  # type: ignore[arg-type]
    found = diarize.label(encoder, visit.audio, lines(visit), profile)  # type: ignore[arg-type]
    assert [x.speaker for x in found.lines] == [t.speaker.value for t in TURNS]
    assert (
        found.method == "voice-profile"
        and found.physician_similarity is not None
        and found.physician_similarity > 0.7
    )
    # a profile of the other voice makes the patient the physician: the profile decides, not the order
    other = diarize.embed(encoder, tts.speak("My knee hurts when I walk.", tts.VOICES[Speaker.PATIENT]))  # type: ignore[arg-type]
    swapped = diarize.label(encoder, visit.audio, lines(visit), other)  # type: ignore[arg-type]
    assert [x.speaker for x in swapped.lines] == [
        PATIENT if t.speaker is Speaker.DOCTOR else DOCTOR for t in TURNS
    ]


def test_without_a_profile_the_speaker_asking_the_questions_is_the_physician(
    visit: tts.Spoken, encoder: object
) -> None:
    found = diarize.label(encoder, visit.audio, lines(visit), None)  # type: ignore[arg-type]
    assert found.method == "turn-taking" and [x.speaker for x in found.lines] == [
        t.speaker.value for t in TURNS
    ]


def test_a_segment_spanning_two_turns_is_split_at_the_speaker_change(
    visit: tts.Spoken, encoder: object
) -> None:
    """Speech to text often hears a question and its answer as one segment: its word timings split it."""
    (a0, b0, _), (a1, b1, _) = visit.turns[0], visit.turns[1]
    merged = Line(
        a0,
        b1,
        f"{TURNS[0].text} {TURNS[1].text}",
        words=[
            *[
                (a0 + (b0 - a0) * i / 6, a0 + (b0 - a0) * (i + 1) / 6, " " + w)
                for i, w in enumerate(TURNS[0].text.split())
            ],
            *[
                (a1 + (b1 - a1) * i / 9, a1 + (b1 - a1) * (i + 1) / 9, " " + w)
                for i, w in enumerate(TURNS[1].text.split())
            ],
        ],
    )
    rest = [
        Line(a, b, t.text, words=[(a, b, " " + t.text)])
        for (a, b, _), t in zip(visit.turns[2:], TURNS[2:], strict=True)
    ]
    profile = diarize.embed(encoder, tts.speak("Let me listen to your chest.", tts.VOICES[Speaker.DOCTOR]))  # type: ignore[arg-type]
    found = diarize.label(encoder, visit.audio, [merged, *rest], profile)  # type: ignore[arg-type]
    said = {w[2].strip(): x.speaker for x in found.lines for w in x.words}
    assert said["Good"] == said["morning."] == DOCTOR and said["aching"] == said["weeks."] == PATIENT
    assert len(found.lines) > len(TURNS) - 1  # the merged segment became two lines (at least)
    assert found.lines[0].start == pytest.approx(a0) and found.lines[0].speaker == DOCTOR
