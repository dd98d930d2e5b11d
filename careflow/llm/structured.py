"""Validate a model's answer against its task schema and its evidence; quality signals of an answer.

The error message is written for the model: the gateway sends it back once as a corrective turn.
It names fields, error types and evidence ids only, never the values, so it is also safe to log.
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ValidationError

from careflow.llm.tasks import TaskOutput, task_spec
from careflow.llm.types import CompletionRequest, CompletionResponse, Message

_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(?P<body>.*)\n```\s*$", re.DOTALL)
# What the model wrote is echoed only when it has the shape of a field name or an evidence id, so a
# key or "id" made of patient text never reaches a message (or the log line that carries it).
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_EVIDENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:./#-]{0,127}$")
_MAX_LISTED = 10


class StructuredOutputError(ValueError):
    """The answer is not valid for its task; str(self) is the corrective instruction for the model."""

    def __init__(self, task: str, problems: list[str]) -> None:
        self.task = task
        self.problems = problems
        listed = "\n".join(f"- {p}" for p in problems[:_MAX_LISTED])
        more = f"\n- ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        super().__init__(
            f"Your answer for task {task!r} is invalid:\n{listed}{more}\n"
            "Answer again with one JSON object that follows the schema, citing only the evidence ids given."
        )


def _json_text(text: str) -> str:
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    return fenced.group("body") if fenced else stripped


def _echo(part: str | int) -> str:
    return str(part) if isinstance(part, int) or _FIELD.match(part) else "<key>"


def _schema_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors(include_input=False, include_url=False):
        where = ".".join(_echo(p) for p in e["loc"]) or "(root)"
        problems.append(f"{where}: {e['msg']}")
    return problems


def parse_output(task: str, response: CompletionResponse, evidence_ids: set[str]) -> BaseModel:
    """The validated output; raises StructuredOutputError for bad JSON, schema or citations."""
    spec = task_spec(task)
    if response.finish_reason in ("max_tokens", "length"):
        truncated = ["the answer was cut off at the output token limit; answer more concisely"]
    else:
        truncated = []
    try:
        data = json.loads(_json_text(response.text))
    except json.JSONDecodeError as exc:
        raise StructuredOutputError(
            task, [*truncated, f"not valid JSON ({exc.msg} at char {exc.pos})"]
        ) from None
    try:
        parsed = spec.output_model.model_validate(data)
    except ValidationError as exc:
        raise StructuredOutputError(task, [*truncated, *_schema_problems(exc)]) from None
    invented = sorted(set(parsed.cited_ids()) - evidence_ids)
    if invented:
        allowed = ", ".join(sorted(evidence_ids)) or "(none: cite nothing)"
        shown = ", ".join(i if _EVIDENCE_ID.match(i) else "<malformed id>" for i in invented)
        problem = f"cites ids not in the evidence: {shown}; the evidence ids are: {allowed}"
        raise StructuredOutputError(task, [problem])
    return parsed


def corrective_request(
    request: CompletionRequest, response: CompletionResponse, error: StructuredOutputError
) -> CompletionRequest:
    """The single retry: the same request with the invalid answer and what was wrong with it appended."""
    messages = [
        *request.messages,
        Message(role="assistant", content=response.text or "(empty)"),
        Message(role="user", content=str(error)),
    ]
    return request.model_copy(update={"messages": messages})


def quality_signals(task: str, response: CompletionResponse, parsed: BaseModel | None) -> dict[str, object]:
    """Per-answer quality log fields (seed P1/P5): ids and numbers only."""
    spec = task_spec(task)
    cited = parsed.cited_ids() if isinstance(parsed, TaskOutput) else []
    missing = parsed.missing_information if isinstance(parsed, TaskOutput) else []
    disclaimer = spec.disclaimer(parsed) if spec.disclaimer is not None and parsed is not None else None
    return {
        "task": task,
        "provider": response.provider,
        "model": response.model,
        "finish_reason": response.finish_reason,
        "valid": parsed is not None,
        "citation_count": len(set(cited)),
        "disclaimer_present": disclaimer,
        "missing_information_count": len(missing),
        "response_length": len(response.text),
        "engine": response.metadata.get("engine", "llm"),
    }
