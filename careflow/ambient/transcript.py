"""An encounter's transcript as the PHI store keeps it: timed segments, each with its speaker once
diarized.  Audio gives segments from speech to text; a supplied diarized text (`[doctor] ...
[patient] ...`) gives one untimed segment per turn.  `labelled()` is what the note is drafted from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from careflow.ambient.encounters import parse_diarized

DOCTOR, PATIENT = "doctor", "patient"


@dataclass
class Line:
    start: float | None  # seconds from the start of the recording (None: a supplied text)
    end: float | None
    text: str
    speaker: str | None = None  # doctor | patient, once diarized
    words: list[tuple[float, float, str]] = field(default_factory=list)  # word timings (speech to text)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Line:
        """A line from its JSON form (the PHI store's, a heartbeat's)."""
        return cls(**{**raw, "words": [tuple(w) for w in raw.get("words") or []]})


@dataclass
class Transcript:
    engine: str  # faster-whisper/<model> | supplied
    lines: list[Line] = field(default_factory=list)
    audio_seconds: float = 0.0

    @property
    def words(self) -> int:
        return sum(len(x.text.split()) for x in self.lines)

    @property
    def speech_seconds(self) -> float:
        return sum((x.end or 0.0) - (x.start or 0.0) for x in self.lines)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Transcript:
        raw = json.loads(data)
        return cls(raw["engine"], [Line.of(x) for x in raw["lines"]], raw.get("audio_seconds", 0.0))

    @classmethod
    def supplied(cls, diarized: str) -> Transcript:
        """A `[doctor] ... [patient] ...` text (ValueError with the format when it is not one)."""
        return cls("supplied", [Line(None, None, t.text, t.speaker.value) for t in parse_diarized(diarized)])

    def labelled(self) -> str:
        """`Doctor: ...` / `Patient: ...` lines, consecutive segments of one speaker joined."""
        out: list[tuple[str, list[str]]] = []
        for x in self.lines:
            who = (x.speaker or "speaker").capitalize()
            if out and out[-1][0] == who:
                out[-1][1].append(x.text)
            else:
                out.append((who, [x.text]))
        return "\n".join(f"{who}: {' '.join(said)}" for who, said in out)
