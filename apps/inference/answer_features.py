"""What quality monitoring keeps of an answer, taken when the answer is recorded: its length in
characters, the model's ``finish_reason`` and whether it was a refusal. The answer itself is PHI
and is purged at the end of retention (or never kept at all: a sync request without ``store``),
so anything the weekly figures and the drift checks (apps/inference/quality.py) need later must
be on the record's metadata by then (``InferenceTask.answer_chars``, ``finish_reason``,
``refused``).

**Refusal detection, and its limits.** An answer counts as a refusal when

* the server says so: OpenAI's ``message.refusal`` is a non-empty string, or ``finish_reason`` is
  ``content_filter`` (vLLM guardrails, hosted models); or
* its opening words are a refusal (``REFUSAL``): "I'm sorry, but I can't…", "I cannot help with…",
  "As an AI, I am unable to…" and their kin, in the first ``HEAD_CHARS`` characters, English only.

The phrase list is a heuristic: it misses refusals worded otherwise or in another language, and
flags an answer that opens with an apology and then answers anyway ("I'm sorry, I can't be sure,
but the usual dose is…"). It is kept narrow on purpose (the refusal must open the answer), so its
rate is a trend to watch for change, which is what the drift check asks of it, not an exact count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

HEAD_CHARS = 300

# "I can't", "I am unable", "I won't", "I must decline"... and what is refused: help, an answer...
_I_CANT = (
    r"i(?: can(?:no|')?t| can not|'m unable| am unable|'m not able| am not able|'m not allowed| am not allowed"
    r"| won'?t| will not| must decline| do not| don'?t)"
)
_ACT = r"(?:help|assist|provide|answer|comply|give|offer|share|respond|discuss|support|do (?:that|this))"
REFUSAL = re.compile(
    r"^\W*(?:"
    rf"(?:(?:i'?m|i am) (?:sorry|afraid)|sorry|i apologi[sz]e)\b[^.!?\n]{{0,60}}?\b{_I_CANT}\b[^.!?\n]{{0,40}}?\b{_ACT}"
    rf"|{_I_CANT} (?:\w+ ){{0,3}}?{_ACT}"
    rf"|as an ai(?: language model| assistant| model)?,? {_I_CANT}\b"
    r")",
    re.IGNORECASE,
)


def is_refusal_text(text: str) -> bool:
    """Whether the answer's opening words are a refusal (the heuristic above)."""
    return bool(REFUSAL.search(text[:HEAD_CHARS].replace("\u2019", "'")))


@dataclass(frozen=True)
class AnswerFeatures:
    chars: int
    finish_reason: str
    refused: bool

    def fields(self) -> dict[str, Any]:
        """The ``InferenceTask`` fields they are kept in."""
        return {"answer_chars": self.chars, "finish_reason": self.finish_reason[:32], "refused": self.refused}


def _judge(chars: int, head: str, finish_reason: str, refusal: str) -> AnswerFeatures:
    refused = bool(refusal) or finish_reason == "content_filter" or is_refusal_text(head)
    return AnswerFeatures(chars, finish_reason, refused)


def of_completion(data: dict[str, Any]) -> AnswerFeatures:
    """A chat completion's (the first choice: medai asks for one; tool calls alone have 0 characters)."""
    choice = ((data.get("choices") or [{}])[0]) or {}
    message = choice.get("message") or {}
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    refusal = message.get("refusal")
    return _judge(len(text), text, str(choice.get("finish_reason") or ""), refusal if isinstance(refusal, str) else "")


def of_text_completion(data: dict[str, Any]) -> AnswerFeatures:
    """A legacy text completion's (its choices' texts together: one per prompt)."""
    texts: list[str] = [
        c["text"] for c in data.get("choices") or () if isinstance(c, dict) and isinstance(c.get("text"), str)
    ]
    reasons = [str(c.get("finish_reason") or "") for c in data.get("choices") or () if isinstance(c, dict)]
    return _judge(sum(len(t) for t in texts), texts[0] if texts else "", reasons[0] if reasons else "", "")


@dataclass
class StreamFeatures:
    """The same, gathered from a stream's chunks as they pass (chat or legacy completions)."""

    chars: int = 0
    head: list[str] = field(default_factory=list)
    head_len: int = 0
    finish_reason: str = ""
    refusal: str = ""

    def add(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if not isinstance(text, str):
                text = choice.get("text")  # a legacy completion's chunk
            if isinstance(text, str) and text:
                self.chars += len(text)
                if self.head_len < HEAD_CHARS:
                    self.head.append(text)
                    self.head_len += len(text)
            refusal = delta.get("refusal") if isinstance(delta, dict) else None
            if isinstance(refusal, str) and refusal:
                self.refusal += refusal
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def features(self) -> AnswerFeatures:
        return _judge(self.chars, "".join(self.head), self.finish_reason, self.refusal)
