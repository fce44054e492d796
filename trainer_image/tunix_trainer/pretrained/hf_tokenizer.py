"""A Hugging Face ``tokenizer.json`` (through the ``tokenizers`` library) and its chat template.

Special tokens come from ``tokenizer_config.json`` (then ``generation_config.json``, then
``config.json``), as transformers reads them. Whether a document starts with BOS (or ends with EOS)
is what the tokenizer's own post-processor does when asked for special tokens: Llama 3's adds
``<|begin_of_text|>``, SmolLM2's adds nothing. Prompt/completion records are rendered with the
chat template (jinja2, sandboxed as in transformers) when the tokenizer has one, so a fine-tuned
model sees the format it was instruction-tuned with; the loss covers the completion only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunix_trainer.data import DataError
from tunix_trainer.pretrained.fast_bpe import FastByteLevelBPE

CHAT_TEMPLATE_FILE = "chat_template.jinja"
Example = tuple[list[int], list[int]]  # (prompt ids: not trained, completion ids: trained)


def _token_text(value: Any) -> str | None:
    """A special token of tokenizer_config.json: a string or an AddedToken dict ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) else None


def compile_chat_template(template: str, source: str) -> Any:
    """A jinja2 template in transformers' sandboxed environment (trim_blocks, lstrip_blocks,
    ``raise_exception``, loop controls)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise DataError(f"{source}: chat_template does not compile: {exc}") from exc


class HFTokenizer:
    """``tokenizer.json`` + ``tokenizer_config.json``: the ``Tokenizer`` protocol of
    ``tunix_trainer.tokenizer`` plus ``encode_examples`` for whole records."""

    def __init__(
        self,
        tokenizer_json: str,
        *,
        tokenizer_config: dict[str, Any] | None = None,
        fallback_ids: dict[str, Any] | None = None,
        source: str = "tokenizer.json",
    ) -> None:
        from tokenizers import Tokenizer

        self.source = source
        self.files: Any = None  # the ModelFiles it was read from, if any
        try:
            self._tok = Tokenizer.from_str(tokenizer_json)
        except Exception as exc:  # tokenizers raises its own Exception type on bad JSON
            raise DataError(f"{source}: not a valid tokenizer.json: {exc}") from exc
        self._json = tokenizer_json
        self._fast = FastByteLevelBPE.for_tokenizer(self._tok, tokenizer_json)  # None: not one it can do
        config = tokenizer_config or {}
        fallback = fallback_ids or {}
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        self.eos_id = self._special_id(config, "eos_token", fallback)
        if self.eos_id is None:
            raise DataError(f"{source}: no eos token (tokenizer_config.json eos_token or eos_token_id)")
        bos = self._special_id(config, "bos_token", fallback)
        pad = self._special_id(config, "pad_token", fallback)
        self.bos_id = self.eos_id if bos is None else bos
        self.pad_id = self.eos_id if pad is None else pad
        probe = self._tok.encode("a", add_special_tokens=True).ids
        self.add_bos = bos is not None and bool(probe) and probe[0] == bos
        self.add_eos = bool(probe) and probe[-1] == self.eos_id
        self.special_tokens = {
            key: text
            for key in ("bos_token", "eos_token", "pad_token", "unk_token")
            if (text := _token_text(config.get(key))) is not None
        }
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        self.chat_template = template if isinstance(template, str) and template else None
        self._template = compile_chat_template(template, source) if self.chat_template else None

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (the data pipeline's worker processes get a copy, the fast encoder with it): the
        compiled chat template is compiled again on the other side."""
        return {**self.__dict__, "_template": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.chat_template:
            self._template = compile_chat_template(self.chat_template, self.source)

    def _special_id(self, config: dict[str, Any], key: str, fallback: dict[str, Any]) -> int | None:
        text = _token_text(config.get(key))
        if text is not None:
            token_id = self._tok.token_to_id(text)
            if token_id is None:
                raise DataError(f"{self.source}: {key} {text!r} is not in the vocabulary")
            return int(token_id)
        return _first_id(fallback.get(f"{key}_id"))

    # --- the Tokenizer protocol ------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without BOS/EOS (special-token strings in it are recognised)."""
        if self._fast is not None:
            return self._fast.encode(text)
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    # --- whole records -----------------------------------------------------------------------------
    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
        """The chat template applied to ``messages`` (DataError when there is none or it fails)."""
        from jinja2 import TemplateError

        if self._template is None:
            raise DataError(f"{self.source}: the tokenizer has no chat_template")
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt, **self.special_tokens
            )
        except TemplateError as exc:
            raise DataError(f"{self.source}: chat_template failed: {exc}") from exc

    def chat_pair(self, prompt: str, completion: str) -> tuple[str, str]:
        """(prompt text, completion text) of one exchange through the chat template: the prompt is
        the user turn with the generation prompt, the completion the rest of the whole exchange."""
        head = self.render_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)
        whole = self.render_chat(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
            add_generation_prompt=False,
        )
        if not whole.startswith(head):
            raise DataError(
                f"{self.source}: chat_template: the rendered exchange does not start with the rendered "
                "prompt, so the completion cannot be separated for the loss"
            )
        return head, whole[len(head) :]

    def encode_examples(self, records: Sequence[tuple[str, str]]) -> list[Example]:
        """Token ids of each ``(prompt, completion)`` record (a text record is ``("", text)``).

        Text: ``[bos] + text + eos``, BOS only where the tokenizer adds one. Prompt/completion with a
        chat template: the rendered prompt and completion (the template writes the special
        tokens); without one: ``[bos] + prompt`` and ``completion + eos``. Encoded in one batch."""
        chat = self._template is not None
        prompts, completions = [], []
        for prompt, completion in records:
            if prompt and chat:
                prompt, completion = self.chat_pair(prompt, completion)
            prompts.append(prompt)
            completions.append(completion)
        prompt_ids, completion_ids = self._encode_all(prompts), self._encode_all(completions)
        bos = [self.bos_id] if self.add_bos else []
        out: list[Example] = []
        for (prompt, _), p, c in zip(records, prompt_ids, completion_ids, strict=True):
            if prompt and chat:
                out.append((p, c))
            else:
                out.append((bos + p, [*c, self.eos_id]))
        return out

    @property
    def document_bos(self) -> int | None:
        """The id a text record starts with (None: the tokenizer adds no BOS)."""
        return self.bos_id if self.add_bos else None

    def encode_documents(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text record's text, without BOS/EOS (``encode_examples`` of
        ``("", text)`` records is ``document_bos`` + these + ``eos_id``)."""
        return self._encode_all(texts)

    def _encode_all(self, texts: list[str]) -> list[list[int]]:
        """``encode`` of each text: the fast path (tiktoken), else one batched library call."""
        if self._fast is not None:
            return self._fast.encode_many(texts)
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]


def load_hf_tokenizer(files: Any, fallback_ids: dict[str, Any] | None = None) -> HFTokenizer:
    """The tokenizer of a model directory (``files``: a ``tunix_trainer.pretrained.source.ModelFiles``):
    ``tokenizer.json`` required; ``tokenizer_config.json``, ``chat_template.jinja`` and
    ``generation_config.json`` optional."""
    text = files.read_text("tokenizer.json")
    config = files.read_json("tokenizer_config.json", required=False) or {}
    if "chat_template" not in config and files.exists(CHAT_TEMPLATE_FILE):  # transformers >= 4.43
        config["chat_template"] = files.read_text(CHAT_TEMPLATE_FILE)
    generation = files.read_json("generation_config.json", required=False) or {}
    ids = {**(fallback_ids or {}), **{k: v for k, v in generation.items() if k.endswith("_token_id")}}
    tokenizer = HFTokenizer(
        text, tokenizer_config=config, fallback_ids=ids, source=files.describe("tokenizer.json")
    )
    tokenizer.files = files  # the export copies the tokenizer files from here
    return tokenizer
