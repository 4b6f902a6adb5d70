"""How chat messages become one prompt for a text-generation model: the LanguageModel's chat
template (`spec.chatTemplate`). Stdlib only: the operator's API takes its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# spec.chatTemplate's JSON names -> ChatTemplate fields
FIELDS = {"system": "system", "user": "user", "assistant": "assistant",
          "generationPrompt": "generation_prompt", "stop": "stop"}
CONTENT = "{content}"


@dataclass(frozen=True)
class ChatTemplate:
    """Each message is its role's pattern with `{content}` replaced, in order; then
    `generation_prompt` is appended; `stop` (unless the request sends its own) ends the turn."""

    system: str = "{content}\n\n"
    user: str = "User: {content}\n"
    assistant: str = "Assistant: {content}\n"
    generation_prompt: str = "Assistant:"
    stop: str | None = "\nUser:"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatTemplate:
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ValueError(f"chat template: unknown field(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(FIELDS)}")
        return cls(**{FIELDS[k]: v for k, v in data.items()})

    def render(self, messages: list[dict[str, str]]) -> str:
        patterns = {"system": self.system, "developer": self.system, "user": self.user,
                    "assistant": self.assistant}
        return "".join(patterns[m["role"]].replace(CONTENT, m["content"])
                       for m in messages) + self.generation_prompt
