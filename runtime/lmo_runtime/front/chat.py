"""How chat messages become one prompt for a text-generation model: the LanguageModel's chat
template (`spec.chatTemplate`) if it sets one, else the checkpoint's own Jinja template
(generation.json `chat_template`), rendered as transformers' `apply_chat_template` renders it.
Stdlib only at import (jinja2 is imported when a checkpoint template is first used): the
operator's API takes its defaults from here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
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
    # the prompt is plain text: the model's BOS goes before it, as before a completion's
    add_special_tokens = True

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


@dataclass(frozen=True)
class CheckpointTemplate:
    """The checkpoint's Jinja chat template, rendered in transformers' sandbox with the same
    variables: `messages`, `add_generation_prompt` (true: the answer follows) and the
    tokenizer's special tokens (`bos_token`, `eos_token`, ...). The template writes every
    special token itself, so none is added when the prompt is tokenized
    (`add_special_tokens` false, as `apply_chat_template(tokenize=True)`); the model's
    end-of-sequence tokens end the turn (no stop string)."""

    source: str
    special_tokens: dict[str, str] = field(default_factory=dict)
    stop = None
    add_special_tokens = False

    def render(self, messages: list[dict[str, str]]) -> str:
        import jinja2.exceptions

        try:
            return _compiled(self.source).render(messages=messages, add_generation_prompt=True,
                                                 tools=None, documents=None,
                                                 **self.special_tokens)
        except jinja2.exceptions.TemplateError as err:
            raise ValueError(f"the checkpoint's chat template refused the messages: {err}") \
                from None


Template = ChatTemplate | CheckpointTemplate


def checkpoint_template(generation: dict[str, Any],
                        token: Any = None) -> CheckpointTemplate | None:
    """The chat template of generation.json, None when the checkpoint has none. `token(id)`
    names a special token for artifacts converted before generation.json listed them."""
    source = generation.get("chat_template")
    if not isinstance(source, str) or not source:
        return None
    tokens = generation.get("special_tokens")
    if tokens is None:
        tokens = {}
        for name in ("bos_token", "eos_token", "pad_token"):
            ident = generation.get(f"{name}_id")
            if ident is not None and token is not None:
                tokens[name] = token(int(ident))
    return CheckpointTemplate(source, {k: v for k, v in tokens.items() if isinstance(v, str)})


@lru_cache(maxsize=8)
def _compiled(source: str) -> Any:
    """The template compiled in the environment transformers renders chat templates in
    (`transformers.utils.chat_template_utils`): immutable sandbox, trim_blocks and
    lstrip_blocks, loop controls, its `tojson`, `raise_exception` and `strftime_now`."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` (marks assistant turns for training):
        rendered as its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body) \
                .set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    class Namespace(jinja2.utils.Namespace):
        """`namespace()` storing no underscore-prefixed attribute (no way to CPython's
        internals), as transformers' TemplateNamespace."""

        def __init__(*args: Any, **kwargs: Any) -> None:
            self, attrs = args[0], dict(*args[1:], **kwargs)
            for name in attrs:
                Namespace.check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            Namespace.check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot store underscore-prefixed attributes ({name!r})")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = lambda *args, **kwargs: dict(*args, **kwargs)
    env.globals["namespace"] = Namespace
    return env.from_string(source)
