"""Which chat format a model gets: QwQ-32B's own, exactly, or the model's template from its GGUF file.

The framework is built around QwQ-32B and renders its format byte for byte (`prompts.render`). Other
models were trained on other formats, and a prompt in the wrong one costs them most of their skill: Qwen2.5's
template opens no `<think>`, DeepSeek-R1's uses other turn markers, plain ChatML models know no tools. So
the GGUF's `tokenizer.chat_template` decides (`chat_format="auto"`):

* a template that renders our probe conversations exactly as `prompts.render` does is QwQ-32B's: the fast
  native renderer is used (and `keep_thinking` applies);
* any other template is rendered with `prompts.render_chat_template`, as Hugging Face would; when it does
  not render tools itself, the tool list and the `<tool_call>` convention are added to the system message;
* no template at all: QwQ-32B's format.

Whether the model's turn starts inside its reasoning is read off the rendered prompt (does it end in
`<think>`?), never assumed, and tells the parser and the backends where the text begins.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.models._turns import THINK_OPEN

__all__ = ["ChatFormat", "ChatFormatChoice", "opens_thinking", "qwq_template_mismatch", "resolve_chat_format"]

ChatFormatChoice = Literal["auto", "qwq", "template"]


def opens_thinking(prompt: str) -> bool:
    """Whether a rendered prompt leaves the model inside its reasoning (it ends in `<think>`)."""
    return prompt.rstrip(" \t\n").endswith(THINK_OPEN)


@dataclass(frozen=True)
class ChatFormat:
    """How prompts are rendered for one model: `kind` "qwq" (native renderer) or "template" (its own)."""

    kind: Literal["qwq", "template"] = "qwq"
    template: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)  # bos_token, eos_token, ... for the template
    reason: str = "QwQ-32B's format"

    def render(
        self, messages: Sequence[Any], tools: Sequence[Any] = (), *, keep_thinking: str = "none"
    ) -> str:
        import prompts

        if self.kind == "qwq" or self.template is None:
            return prompts.render(messages, list(tools), keep_thinking=keep_thinking)  # type: ignore[arg-type]
        # Notes are user messages to a model that answers without reasoning, where it heeds them; a reasoning
        # model's template keeps them where results go (see `prompts.render_chat_template`).
        return self._render_template(messages, tools, notes_as="tool" if self._reasons else "user")

    def _render_template(
        self, messages: Sequence[Any], tools: Sequence[Any], *, notes_as: Literal["tool", "user"]
    ) -> str:
        import prompts

        assert self.template is not None
        return prompts.render_chat_template(
            self.template,
            messages,
            list(tools) or None,
            add_generation_prompt=True,
            notes_as=notes_as,
            **self.variables,
        )

    @functools.cached_property
    def _reasons(self) -> bool:
        return opens_thinking(self._render_template([{"role": "user", "content": "Hi"}], (), notes_as="tool"))

    def opens_thinking(self) -> bool:
        """Whether the model's turn starts inside its reasoning, read off a rendered one-question prompt."""
        return self.kind == "qwq" or self.template is None or self._reasons

    @property
    def tools_in_template(self) -> bool:
        """Whether the model's own template renders the tools (else the framework's tool prompt does)."""
        import prompts

        return self.kind == "qwq" or self.template is None or prompts.template_supports_tools(self.template)

    def describe(self) -> str:
        if self.kind == "qwq":
            return f"qwq ({self.reason})"
        tools = (
            "renders tools itself" if self.tools_in_template else "tools added by the framework's tool prompt"
        )
        return f"template ({self.reason}; {tools})"


def _probes() -> list[tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None]]:
    """Conversations that exercise the format's rules: system turn, tools, a call, its result."""
    tool = {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
    call = {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}
    return [
        ("plain", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], None),
        (
            "tools",
            [
                {"role": "user", "content": "Add 2 and 3."},
                {"role": "assistant", "content": "Reasoning.</think>\n\n", "tool_calls": [call]},
                {"role": "tool", "content": "5"},
            ],
            [tool],
        ),
    ]


def qwq_template_mismatch(template: str, **variables: Any) -> str | None:
    """None when `template` renders the probe conversations exactly as `prompts.render`; else where it differs."""
    import prompts

    for name, messages, tools in _probes():
        ours = prompts.render(messages, tools)
        try:
            theirs = prompts.render_chat_template(
                template, messages, tools, add_generation_prompt=True, tool_prompt=False, **variables
            )
        except prompts.PromptTemplateError as exc:
            return f"the template fails on the {name} probe: {exc}"
        if theirs != ours:
            at = next(
                (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                min(len(ours), len(theirs)),
            )
            return (
                f"differs from QwQ-32B's format on the {name} probe at character {at}: QwQ's format writes "
                f"{ours[at : at + 40]!r}, the template {theirs[at : at + 40]!r}"
            )
    return None


def resolve_chat_format(
    choice: ChatFormatChoice, template: str | None, *, variables: dict[str, Any] | None = None
) -> ChatFormat:
    """The format for a model whose file carries `template` (None: no template), given the user's choice."""
    if choice not in ("auto", "qwq", "template"):
        raise ValueError(f"chat_format must be 'auto', 'qwq' or 'template'; got {choice!r}")
    variables = dict(variables or {})
    if choice == "qwq":
        return ChatFormat("qwq", template, variables, reason="chosen")
    if not template:
        if choice == "template":
            raise ValueError("chat_format='template' but the model carries no chat template")
        return ChatFormat("qwq", None, variables, reason="the model carries no chat template")
    mismatch = qwq_template_mismatch(template, **variables)
    if mismatch is None and choice == "auto":
        return ChatFormat("qwq", template, variables, reason="the model's template is QwQ-32B's")
    reason = "chosen" if choice == "template" else f"the model's own template, which {mismatch}"
    return ChatFormat("template", template, variables, reason=reason)
