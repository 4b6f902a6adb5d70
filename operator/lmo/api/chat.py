"""spec.chatTemplate: how chat messages become a prompt (text-generation only); with it,
each version's front serves `/v1/chat/completions`."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from lmo.api.base import _Model
from lmo_runtime.front.chat import CONTENT
from lmo_runtime.front.chat import ChatTemplate as _Runtime

_DEFAULT = _Runtime()
_ROLE = CONTENT.replace("{", r"\{").replace("}", r"\}")


def _role(name: str, default: str) -> Any:
    return Field(default=default, pattern=_ROLE, max_length=4096,
                 description=f"Pattern of {name} message: `{CONTENT}` is replaced by its text.")


class ChatTemplate(_Model):
    system: str = _role("a system", _DEFAULT.system)
    user: str = _role("a user", _DEFAULT.user)
    assistant: str = _role("an assistant", _DEFAULT.assistant)
    generation_prompt: str = Field(
        default=_DEFAULT.generation_prompt, max_length=4096,
        description="Appended after the messages: where the model's answer begins.")
    stop: str | None = Field(
        default=_DEFAULT.stop, max_length=256,
        description="Generation stops before this text (the next turn) unless the request "
        "sends its own stop.")

    def to_front(self) -> dict[str, str | None]:
        """What the front takes (`lmo_runtime.front.chat.ChatTemplate.from_dict`)."""
        return self.model_dump(by_alias=True, mode="json")

    def to_json(self) -> str:
        """The front container's LMO_CHAT_TEMPLATE."""
        return json.dumps(self.to_front(), sort_keys=True)
