"""Diarization for ambient notes: who said each transcript segment, physician or patient.

Speaker embeddings from resemblyzer (a GE2E d-vector encoder whose weights ship in its wheel) over
sliding windows of the recording, clustered into two speakers; each word (speech to text keeps word
timings) takes the speaker of the window around it, so a segment that spans two turns is split.  The
physician is the cluster nearest the badge owner's enrolled voice profile (`careflow ambient enroll`);
with no profile enrolled, the speaker who asks more of the questions (turn-taking), and the transcript
says which was used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from careflow.ambient.stt import SAMPLE_RATE
from careflow.ambient.transcript import DOCTOR, PATIENT, Line

if TYPE_CHECKING:
    from resemblyzer import VoiceEncoder

WINDOW_RATE = 2  # voice windows per second of audio
SMOOTHING = 1  # words either side a word's label is voted with (2-word replies survive)


def encoder() -> VoiceEncoder:
    import warnings

    with warnings.catch_warnings():  # resemblyzer imports a scipy name that scipy has deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


def embed(enc: VoiceEncoder, audio: NDArray[np.float32]) -> NDArray[np.float32]:
    """One unit-length voice embedding of `audio` (16 kHz mono)."""
    vec: NDArray[np.float32] = enc.embed_utterance(audio.astype(np.float32), rate=4)
    return vec


@dataclass(frozen=True)
class Speakers:
    lines: list[Line]  # the transcript again, split where the speaker changes, each line labelled
    method: str  # voice-profile | turn-taking | single-speaker
    physician_similarity: float | None  # cosine of the doctor cluster to the enrolled profile


def label(
    enc: VoiceEncoder,
    audio: NDArray[np.float32],
    lines: Sequence[Line],
    profile: NDArray[np.float32] | None,
) -> Speakers:
    """Each word's speaker: the cluster of the voice window nearest its middle (windows of 1.6 s every
    1/WINDOW_RATE s over the whole recording, clustered in two), smoothed over its neighbours; the
    segments are then split where the speaker changes."""
    from sklearn.cluster import KMeans

    words = [
        (w, i) for i, x in enumerate(lines) for w in (x.words or [(x.start or 0.0, x.end or 0.0, x.text)])
    ]
    if not words:
        return Speakers(list(lines), "single-speaker", None)
    _, partials, splits = enc.embed_utterance(
        audio.astype(np.float32), return_partials=True, rate=WINDOW_RATE
    )
    centres = np.array([(sl.start + sl.stop) / 2 / SAMPLE_RATE for sl in splits])
    nearest = [int(np.argmin(np.abs(centres - (w[0] + w[1]) / 2))) for w, _ in words]
    used = sorted(set(nearest))
    if len(used) < 2:
        return Speakers([replace(x, speaker=DOCTOR) for x in lines], "single-speaker", None)
    vectors = np.stack([_unit(partials[j]) for j in used])
    km = KMeans(n_clusters=2, n_init=10, random_state=0).fit(vectors)
    cluster = dict(zip(used, (int(k) for k in km.labels_), strict=True))
    timed = all(x.words for x in lines)  # word timings: a window's voice can bleed into the next turn
    of_word = _smooth([cluster[j] for j in nearest], SMOOTHING if timed else 0)
    centroids = [_unit(vectors[km.labels_ == k].mean(axis=0)) for k in (0, 1)]
    split = _regroup(lines, words, of_word)
    if profile is not None:
        sims = [float(np.dot(c, _unit(profile))) for c in centroids]
        doctor, method, similarity = int(np.argmax(sims)), "voice-profile", max(sims)
    else:  # the speaker who asks more of the questions
        asks = [sum(x.text.rstrip().endswith("?") for x, k in split if k == c) for c in (0, 1)]
        doctor, method, similarity = int(asks[1] > asks[0]), "turn-taking", None
    return Speakers(
        [replace(x, speaker=DOCTOR if k == doctor else PATIENT) for x, k in split], method, similarity
    )


def _smooth(labels: list[int], half: int) -> list[int]:
    """Each word takes the majority label of the words around it (a window bleeds over a turn's edge)."""
    out = []
    for i in range(len(labels)):
        around = labels[max(0, i - half) : i + half + 1]
        out.append(int(sum(around) * 2 > len(around)) if len(around) % 2 else labels[i])
    return out


def _regroup(
    lines: Sequence[Line], words: list[tuple[tuple[float, float, str], int]], labels: list[int]
) -> list[tuple[Line, int]]:
    """Consecutive words of one segment and one speaker become one line."""
    out: list[tuple[Line, int]] = []
    run: list[tuple[float, float, str]] = []
    for n, ((w, i), k) in enumerate(zip(words, labels, strict=True)):
        run.append(w)
        last = n + 1 == len(words) or words[n + 1][1] != i or labels[n + 1] != k
        if last:
            text = "".join(x[2] for x in run).strip() if lines[i].words else lines[i].text
            out.append((Line(run[0][0], run[-1][1], text, None, list(run) if lines[i].words else []), k))
            run = []
    return out


def _unit(v: NDArray[np.float32]) -> NDArray[np.float32]:
    n = float(np.linalg.norm(v))
    return v / n if n else v
