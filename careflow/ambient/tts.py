"""Synthetic encounters spoken aloud: espeak-ng (the library and voices shipped in the
`espeakng-loader` wheel, called through ctypes) reads each turn of a scripted visit in the doctor's or
the patient's voice; the turns are joined with pauses (and, if asked, room noise) into one 16 kHz
recording, with each turn's time span known (the diarization reference).

For tests, the demo and bench/ambient_bench.py only: synthetic speech of synthetic patients.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from careflow.ambient.encounters import Speaker, Turn
from careflow.ambient.stt import SAMPLE_RATE

VOICES = {Speaker.DOCTOR: "en-us+m3", Speaker.PATIENT: "en+f3"}  # two clearly different speakers
_SYNCHRONOUS, _POS_CHARACTER, _CHARS_UTF8 = 2, 1, 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """The espeak-ng library, initialised once per process (it keeps global state: one caller at a time)."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lib: Any = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
        self.rate = int(self._lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode(), 0))
        if self.rate <= 0:
            raise RuntimeError(f"espeak-ng did not initialise with its data at {data}")
        self._chunks: list[NDArray[np.int16]] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library calls it
        self._lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _collect(self, wav: Any, n: int, _events: Any) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def say(self, text: str, voice: str, words_per_minute: int) -> NDArray[np.int16]:
        with self.lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise RuntimeError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(_RATE, words_per_minute, 0)
            self._chunks = []
            raw = text.encode()
            self._lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


_engine: _Espeak | None = None
_engine_lock = threading.Lock()


def _espeak() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


def speak(text: str, voice: str, words_per_minute: int = 150) -> NDArray[np.float32]:
    """`text` in `voice`, as 16 kHz mono float32."""
    from scipy.signal import resample_poly

    engine = _espeak()
    pcm = engine.say(text, voice, words_per_minute).astype(np.float32) / 32768.0
    g = int(np.gcd(SAMPLE_RATE, engine.rate))
    out: NDArray[np.float32] = resample_poly(pcm, SAMPLE_RATE // g, engine.rate // g).astype(np.float32)
    return out


@dataclass(frozen=True)
class Spoken:
    audio: NDArray[np.float32]  # 16 kHz mono
    turns: list[tuple[float, float, Speaker]]  # each turn's span (seconds) and speaker: the reference

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def speak_turns(
    turns: Sequence[Turn],
    *,
    pause: float = 0.6,
    noise_db: float | None = None,
    seed: int = 0,
    words_per_minute: int = 150,
) -> Spoken:
    """The visit as one recording: each turn in its speaker's voice at `words_per_minute`, `pause`
    seconds between turns, and room noise `noise_db` dB below full scale throughout when given."""
    gap = np.zeros(int(pause * SAMPLE_RATE), np.float32)
    parts: list[NDArray[np.float32]] = [gap]
    spans: list[tuple[float, float, Speaker]] = []
    at = len(gap)
    for t in turns:
        said = speak(t.text, VOICES[t.speaker], words_per_minute)
        spans.append((at / SAMPLE_RATE, (at + len(said)) / SAMPLE_RATE, t.speaker))
        parts += [said, gap]
        at += len(said) + len(gap)
    audio = np.concatenate(parts)
    if noise_db is not None:
        rng = np.random.default_rng(seed)
        audio = audio + rng.normal(0.0, 10 ** (noise_db / 20), len(audio)).astype(np.float32)
    return Spoken(np.clip(audio, -1.0, 1.0).astype(np.float32), spans)


def to_flac(audio: NDArray[np.float32]) -> bytes:
    """16-bit FLAC bytes of 16 kHz mono audio (what a badge uploads)."""
    import io

    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
