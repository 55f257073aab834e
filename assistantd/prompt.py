"""How a managed llama-server formats a conversation, and the template tokens no user sees.

A GGUF model usually carries its chat template (``tokenizer.chat_template``); llama-server
uses it. When it has none, llama-server falls back to ChatML, a format most models never
saw (the bundled Gemma base model answered with ``<|im_end|>`` noise). So the daemon reads
the GGUF's metadata and picks a format (``[local.NAME] chat_template`` overrides it):

* the model's own template, when it has one;
* else llama.cpp's built-in template for the model's architecture (Gemma: ``gemma``);
* ``transcript``: the daemon's Jinja template that renders the conversation as a
  "Question: ... / Answer: ..." transcript after two worked examples, with a stop at the
  next "Question:". The bundled base model answers that best (docs/local-models.md has
  the measurements), so it is the bundled model's format.

Whatever the format, template tokens (``<|im_end|>``, ``<end_of_turn>``, ``</s>``, ... and
the model's own control tokens) are stop sequences, and a filter removes any that still
reach the answer's text, also when one is split across streamed deltas.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

TRANSCRIPT = "transcript"

# The daemon's transcript template. Its two examples are not among the questions the
# daemon was measured on. The first user message starts the transcript; the system
# prompt, if any, comes first as plain text. llama.cpp renders templates with trim_blocks
# (as Hugging Face does), so every newline is written as a string of its own.
TRANSCRIPT_JINJA = r"""{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{{- message['content'] | trim + '\n\n' -}}
{%- endif -%}
{%- endfor -%}
{{- 'Question: What is the boiling point of water?\n' -}}
{{- 'Answer: Water boils at 100 degrees Celsius at sea level.\n\n' -}}
{{- 'Question: Why do cats purr?\n' -}}
{{- 'Answer: Cats purr when they are content, and sometimes to calm themselves' -}}
{{- ' when they are hurt or afraid.' -}}
{%- for message in messages -%}
{%- if message['role'] == 'user' -%}
{{- '\n\nQuestion: ' + message['content'] | trim -}}
{%- elif message['role'] == 'assistant' -%}
{{- '\nAnswer: ' + message['content'] | trim -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '\nAnswer:' -}}
{%- endif -%}
"""
TRANSCRIPT_STOPS = ("\nQuestion:", "\nAnswer:")

# Template tokens of the common chat formats: stop sequences for every managed server and
# removed from every local model's answer.
TEMPLATE_TOKENS = (
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|end|>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|begin_of_text|>",
    "<end_of_turn>",
    "<start_of_turn>",
    "<s>",
    "</s>",
    "<eos>",
    "<bos>",
    "<pad>",
    "[INST]",
    "[/INST]",
)

# llama.cpp's built-in templates (``--chat-template NAME``) that fit a model family's
# own chat format, by GGUF ``general.architecture``; any other architecture gets the
# transcript, which needs no format the model was trained on.
ARCH_TEMPLATES = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "phi3": "phi3",
    "command-r": "command-r",
    "deepseek2": "deepseek2",
}
ARCH_STOPS = {"gemma": ("<end_of_turn>", "<start_of_turn>")}


# -- GGUF metadata -------------------------------------------------------------------

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_CONTROL = 3  # llama.cpp's token type of a control (special) token
_WANTED_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")


@dataclass
class ModelInfo:
    """What the daemon reads from a GGUF file's header."""

    architecture: str | None = None
    chat_template: str | None = None
    special_tokens: frozenset[str] = frozenset()  # texts of the vocabulary's control tokens
    stop_tokens: tuple[str, ...] = ()  # its EOS / EOT / BOS texts


class GgufError(ValueError):
    pass


def read_gguf(path: Path) -> ModelInfo:
    """The architecture, chat template and special tokens of the GGUF model at ``path``.

    Reads only the header (the vocabulary: a few MB), never the weights. Blocking."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return _parse(m)


def _parse(m: mmap.mmap) -> ModelInfo:
    if m[:4] != b"GGUF":
        raise GgufError("not a GGUF file")
    version, _tensors, n_kv = struct.unpack_from("<IQQ", m, 4)
    if version < 2:
        raise GgufError(f"GGUF version {version} is too old")
    pos = 24
    scalars: dict[str, object] = {}
    arrays: dict[str, list[object]] = {}

    def string(at: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", m, at)
        return m[at + 8 : at + 8 + n].decode("utf-8", errors="replace"), at + 8 + n

    def skip(kind: int, at: int) -> int:
        if kind == _STRING:
            return at + 8 + int(struct.unpack_from("<Q", m, at)[0])
        if kind in _SCALARS:
            return at + struct.calcsize(_SCALARS[kind])
        raise GgufError(f"unknown value type {kind}")

    for _ in range(n_kv):
        key, pos = string(pos)
        (kind,) = struct.unpack_from("<I", m, pos)
        pos += 4
        if kind == _ARRAY:
            item, n = struct.unpack_from("<IQ", m, pos)
            pos += 12
            if key in _WANTED_ARRAYS and item == _STRING:
                values: list[object] = []
                for _ in range(n):
                    s, pos = string(pos)
                    values.append(s)
                arrays[key] = values
            elif key in _WANTED_ARRAYS and item in _SCALARS:
                fmt = _SCALARS[item]
                size = struct.calcsize(fmt)
                arrays[key] = [v for (v,) in struct.iter_unpack(fmt, m[pos : pos + n * size])]
                pos += n * size
            elif item in _SCALARS:
                pos += n * struct.calcsize(_SCALARS[item])
            else:
                for _ in range(n):
                    pos = skip(item, pos)
        elif kind == _STRING:
            scalars[key], pos = string(pos)
        elif kind in _SCALARS:
            (scalars[key],) = struct.unpack_from(_SCALARS[kind], m, pos)
            pos += struct.calcsize(_SCALARS[kind])
        else:
            raise GgufError(f"unknown value type {kind} for {key}")

    tokens = arrays.get("tokenizer.ggml.tokens", [])
    types = arrays.get("tokenizer.ggml.token_type", [])
    special = frozenset(
        str(t) for t, k in zip(tokens, types, strict=False) if k == _CONTROL and _looks_like_tag(t)
    )
    stops = []
    for name in ("eos", "eot", "bos"):
        i = scalars.get(f"tokenizer.ggml.{name}_token_id")
        if isinstance(i, int) and 0 <= i < len(tokens) and _looks_like_tag(tokens[i]):
            stops.append(str(tokens[i]))
    arch = scalars.get("general.architecture")
    template = scalars.get("tokenizer.chat_template")
    return ModelInfo(
        architecture=arch if isinstance(arch, str) else None,
        chat_template=template if isinstance(template, str) and template.strip() else None,
        special_tokens=special,
        stop_tokens=tuple(dict.fromkeys(stops)),
    )


def _looks_like_tag(token: object) -> bool:
    """``<eos>``, ``<|im_end|>``, ``[INST]``: a token no answer means to show as text."""
    t = str(token)
    return len(t) >= 3 and ((t[0] == "<" and t[-1] == ">") or (t[0] == "[" and t[-1] == "]"))


# -- the format of one server ------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """What a request to one server adds (stop sequences) and what its answers lose
    (template tokens); ``trim``: the format leaves a space before the answer and a line
    break before the stop, which the answer loses."""

    stops: tuple[str, ...] = ()
    specials: frozenset[str] = frozenset(TEMPLATE_TOKENS)
    trim: bool = False

    def filter(self) -> TokenFilter:
        return TokenFilter(self.specials, self.trim)


@dataclass(frozen=True)
class Format:
    """A managed server's prompt format: its flags and its guard."""

    name: str  # the model's own template, a built-in name, "transcript" or a file
    args: tuple[str, ...]
    guard: Guard


def choose(setting: str | None, info: ModelInfo, template_dir: Path) -> Format:
    """The format for a model: ``setting`` (the config's ``chat_template``) if given, else
    the model's own template, else the one its architecture calls for. Writes the
    transcript template into ``template_dir`` when it is the one. Blocking."""
    specials = frozenset(TEMPLATE_TOKENS) | info.special_tokens
    base = tuple(dict.fromkeys((*TEMPLATE_TOKENS, *info.stop_tokens)))
    if setting is None:
        if info.chat_template is not None:
            return Format("the model's own", ("--jinja",), Guard(base, specials))
        setting = ARCH_TEMPLATES.get(info.architecture or "", TRANSCRIPT)
    if setting == TRANSCRIPT:
        path = template_dir / "transcript.jinja"
        if not path.is_file() or path.read_text(encoding="utf-8") != TRANSCRIPT_JINJA:
            template_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(TRANSCRIPT_JINJA, encoding="utf-8")
            tmp.replace(path)
        args: tuple[str, ...] = ("--jinja", "--chat-template-file", str(path))
        return Format(TRANSCRIPT, args, Guard((*TRANSCRIPT_STOPS, *base), specials, trim=True))
    if "/" in setting or setting.endswith(".jinja"):  # a Jinja template file of the user's
        file = str(Path(setting).expanduser())
        return Format(setting, ("--jinja", "--chat-template-file", file), Guard(base, specials))
    # A llama.cpp built-in name: those work without the Jinja engine only.
    extra = ARCH_STOPS.get(setting, ())
    guard = Guard(tuple(dict.fromkeys((*extra, *base))), specials)
    return Format(setting, ("--no-jinja", "--chat-template", setting), guard)


# -- the filter ---------------------------------------------------------------------------


@dataclass
class TokenFilter:
    """Removes template tokens from a streamed answer. ``feed`` returns the text that is
    safe to show now; a tail that could be the start of a token waits for the next delta
    (or ``flush`` at the end of the answer). With ``trim``, the answer loses its leading
    and trailing whitespace (trailing whitespace waits until more text follows it)."""

    specials: frozenset[str]
    trim: bool = False
    _held: str = ""
    _started: bool = False
    _lengths: tuple[int, ...] = field(init=False)
    _prefixes: frozenset[str] = field(init=False)
    _starts: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self._lengths = tuple(sorted({len(t) for t in self.specials}, reverse=True))
        self._prefixes = frozenset(t[:i] for t in self.specials for i in range(1, len(t)))
        self._starts = frozenset(t[0] for t in self.specials)

    def feed(self, text: str) -> str:
        buf = self._remove(self._held + text)
        cut = len(buf)
        for i in range(max(0, len(buf) - (self._lengths[0] if self._lengths else 0)), len(buf)):
            if buf[i] in self._starts and buf[i:] in self._prefixes:
                cut = i
                break
        if self.trim:
            cut = len(buf[:cut].rstrip())
        self._held = buf[cut:]
        return self._lead(buf[:cut])

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return self._lead(rest.rstrip() if self.trim else rest)

    def _lead(self, text: str) -> str:
        if self.trim and not self._started:
            text = text.lstrip()
        if text:
            self._started = True
        return text

    def _remove(self, text: str) -> str:
        if not any(c in text for c in self._starts):
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            if text[i] in self._starts:
                n = next((n for n in self._lengths if text[i : i + n] in self.specials), 0)
                if n:
                    i += n
                    continue
            out.append(text[i])
            i += 1
        return "".join(out)


def clean(text: str, guard: Guard) -> str:
    """``text`` without template tokens (a whole answer at once)."""
    f = guard.filter()
    return f.feed(text) + f.flush()
