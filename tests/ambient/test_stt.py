"""Offline speech to text (careflow/ambient/stt.py) with the real default model joined from its wheels.

The speech fixture is synthetic, made here with espeak-ng and sox (no PHI):
    espeak-ng -v en-us -s 150 -w a.wav "The patient reports chest pain for two days, worse on exertion."
    espeak-ng -v en-us+f3 -s 150 -w b.wav "I take metformin and lisinopril every morning."
    espeak-ng -v en-us -s 150 -w c.wav "Blood pressure is one fifty over ninety."
    sox a.wav b.wav c.wav -r 16000 -c 1 -b 16 three-sentences.flac
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from careflow.ambient import stt

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def model(models_dir: Path) -> object:
    return stt.load_model(stt.install_default_model(models_dir), threads=2)


def test_the_default_model_is_joined_once_and_verified(models_dir: Path) -> None:
    folder = stt.install_default_model(models_dir)
    joined = folder / "model.bin"
    assert stt._sha256(joined) == stt.DEFAULT_MODEL_SHA256
    assert {p.name for p in folder.iterdir()} >= {"config.json", "tokenizer.json", "vocabulary.txt"}
    before = joined.stat().st_mtime_ns
    assert stt.install_default_model(models_dir) == folder and joined.stat().st_mtime_ns == before


def test_a_model_that_is_not_the_pinned_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stt, "DEFAULT_MODEL_SHA256", "0" * 64)
    with pytest.raises(stt.SttModelError, match="SHA-256 is d01c3014"):
        stt.install_default_model(tmp_path)
    assert not list((tmp_path / stt.DEFAULT_MODEL_DIR).glob("model.bin*"))  # nothing half-written


def test_a_configured_folder_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(stt.SttModelError, match=r"no CTranslate2 model\.bin"):
        stt.model_path(str(tmp_path), tmp_path / "models")


@pytest.mark.parametrize(
    ("text", "loop"),
    [
        ("Thank you. Thank you. Thank you. Thank you.", True),
        ("CT scan, CT scan, CT scan, CT scan of the chest", True),
        ("the pain the pain the pain", False),  # three times is speech
        ("She takes metformin and lisinopril.", False),
    ],
)
def test_a_decoding_loop_is_recognised(text: str, loop: bool) -> None:
    assert stt.looping(text) is loop


def seg(
    text: str = "chest pain", logprob: float = -0.3, no_speech: float = 0.05, ratio: float = 1.4
) -> stt.Segment:
    return stt.Segment(0.0, 2.0, text, logprob, no_speech, ratio)


def test_only_plausible_segments_are_kept() -> None:
    assert stt.plausible(seg())
    assert not stt.plausible(seg(logprob=-1.3))  # decoded without confidence
    assert not stt.plausible(seg(no_speech=0.9, logprob=-0.7))  # text read into silence
    assert not stt.plausible(seg(ratio=3.1))  # highly repetitive
    assert not stt.plausible(seg(text="   "))


def test_a_minute_of_silence_and_room_noise_gives_no_text(model: object) -> None:
    rng = np.random.default_rng(4)
    silence = np.zeros(30 * stt.SAMPLE_RATE, dtype=np.float32)
    hum = 0.01 * np.sin(2 * np.pi * 60 * np.arange(30 * stt.SAMPLE_RATE) / stt.SAMPLE_RATE)
    room = (0.01 * rng.standard_normal(30 * stt.SAMPLE_RATE) + hum).astype(np.float32)
    assert list(stt.transcribe(model, np.concatenate([silence, room]))) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["prompt", "hotwords"])
def test_speech_with_the_patients_medications_as_vocabulary(model: object, mode: str) -> None:
    audio = stt.load_audio(AUDIO / "three-sentences.flac")
    words = ["metformin", "lisinopril"]
    segments = list(stt.transcribe(model, audio, vocabulary=words, vocabulary_mode=mode))  # type: ignore[arg-type]
    text = " ".join(s.text for s in segments).lower()
    assert "chest pain" in text and "metformin" in text and "lisinopril" in text
    assert "150 over 90" in text or "one fifty over ninety" in text
    assert all(a.end <= b.start + 0.01 for a, b in itertools.pairwise(segments))
    assert segments[-1].end <= len(audio) / stt.SAMPLE_RATE + 0.1


FIRST_SENTENCE_ENDS = 4.85  # a.wav's length: the retry resumes after the first finished segment


def test_a_resumed_transcription_starts_at_the_offset_with_the_recordings_timestamps(model: object) -> None:
    audio = stt.load_audio(AUDIO / "three-sentences.flac")
    words = ["metformin", "lisinopril"]
    rest = list(stt.transcribe(model, audio, offset=FIRST_SENTENCE_ENDS, vocabulary=words))  # type: ignore[arg-type]
    text = " ".join(s.text for s in rest).lower()
    assert rest and all(s.start >= FIRST_SENTENCE_ENDS for s in rest)
    assert "chest pain" not in text and "lisinopril" in text and "blood pressure" in text


def test_a_speech_worker_decodes_one_recording_at_a_time_the_others_wait_queued() -> None:
    """Decoding uses every core: careflow-stt declares one activity slot per worker process, and
    `careflow worker --task-queue careflow-stt` takes it from the declaration (the main queue keeps
    the setting's default)."""
    from careflow import task_queues
    from workers.registry import activity_slots

    assert activity_slots(task_queues.STT) == 1
    assert activity_slots(task_queues.MAIN) is None
