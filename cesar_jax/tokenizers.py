"""Tokenizers: Qwen's `tokenizer.json` through the `tokenizers` library, and a tiny built-in one.

Both are byte-level BPE with the same special tokens, so everything downstream (prompts, the
sampler's budget forcing, the token-id rewards) sees one interface:

* `Tokenizer.from_file(path)`: a Hugging Face `tokenizer.json` (Qwen2-Audio, Qwen2.5-Omni).
  Its chat template follows the model: Qwen2.5-Omni's tokenizer (it alone holds the vision
  tokens `<|IMAGE|>`, `<|VIDEO|>` beside the audio ones) gets the Omni thinker's template and
  system prompt, any other the Qwen2-Audio one (see prompts.py); `chat_format=` overrides.
  The rule reads the vocabulary itself, so a run's saved tokenizer.json keeps its template.
  The four reasoning tags are added as tokens when the file lacks them; their ids land in the
  padded tail of Qwen's embedding matrix (151,665 < 156,032), where they start untrained.
* `Tokenizer.builtin()`: a tiny tokenizer trained with `tokenizers` on the synthetic corpus and
  shipped as package data (`cesar_jax/assets/tokenizer.json`); rebuilt deterministically with
  `python -m cesar_jax.tokenizers --rebuild`.

The reasoning tags `<think>`, `</think>`, `<answer>`, `</answer>` are single tokens, so "inside
the think part" is a property of token positions the sampler and the rewards can compute with
a cumulative sum, never by decoding text.
"""

from __future__ import annotations

import functools
import importlib.resources
import pathlib
from typing import Iterable, Iterator, Sequence

import tokenizers as hf_tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from cesar_jax import prompts

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
REASONING_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
# Qwen2's special tokens, in Qwen's order; ids 0.. in the built-in tokenizer.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
) + REASONING_TAGS

# GPT-2 style split with Qwen's single-digit rule: a pre-token is a (space-led) letter run, one
# digit, a (space-led) punctuation run or whitespace, so no token mixes letters, digits and
# punctuation. The token-id rewards rely on this to find word boundaries from token ids.
BUILTIN_SPLIT_PATTERN = r""" ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
BUILTIN_VOCAB_SIZE = 1024
SYSTEM_PROMPT = prompts.DEFAULT_SYSTEM_PROMPTS["qwen2_audio"]
# Tokens only Qwen2.5-Omni's tokenizer has (Qwen2-Audio's stops at <|audio_eos|>).
OMNI_MARKER_TOKENS = ("<|IMAGE|>", "<|VIDEO|>")
_ASSET = "tokenizer.json"


class Tokenizer:
  """A `tokenizers.Tokenizer` plus the ids and the chat template this project needs."""

  def __init__(self, tokenizer: hf_tokenizers.Tokenizer, *, system_prompt: str | None = None,
               chat_format: str | None = None):
    """chat_format: "qwen2_audio" or "qwen2_5_omni" (None: from the vocabulary, see above);
    system_prompt: None = the format's default."""
    missing = [t for t in REASONING_TAGS if tokenizer.token_to_id(t) is None]
    if missing:
      tokenizer.add_special_tokens(missing)
    self._tok = tokenizer
    if chat_format is None:
      is_omni = all(tokenizer.token_to_id(t) is not None for t in OMNI_MARKER_TOKENS)
      chat_format = "qwen2_5_omni" if is_omni else "qwen2_audio"
    if chat_format not in prompts.CHAT_FORMATS:
      raise ValueError(f"chat_format={chat_format!r} is not one of {prompts.CHAT_FORMATS}")
    self.chat_format = chat_format
    self.system_prompt = (prompts.DEFAULT_SYSTEM_PROMPTS[chat_format] if system_prompt is None
                          else system_prompt)
    ids = {t: self._required_id(t) for t in SPECIAL_TOKENS}
    self.endoftext_id = ids["<|endoftext|>"]
    self.pad_id = self.endoftext_id  # As Qwen: <|endoftext|> pads.
    self.im_start_id = ids["<|im_start|>"]
    self.eos_id = ids["<|im_end|>"]  # A chat turn ends with <|im_end|>.
    self.audio_id = ids["<|AUDIO|>"]
    self.audio_bos_id = ids["<|audio_bos|>"]
    self.audio_eos_id = ids["<|audio_eos|>"]
    self.think_open_id = ids[THINK_OPEN]
    self.think_close_id = ids[THINK_CLOSE]
    self.answer_open_id = ids[ANSWER_OPEN]
    self.answer_close_id = ids[ANSWER_CLOSE]
    self._special_ids = frozenset(
        i for i, added in tokenizer.get_added_tokens_decoder().items() if added.special)

  def _required_id(self, token: str) -> int:
    i = self._tok.token_to_id(token)
    if i is None:
      raise ValueError(f"tokenizer has no special token {token!r}; Qwen2-Audio prompts need it")
    return i

  @classmethod
  def from_file(cls, path: str | pathlib.Path, **kwargs) -> "Tokenizer":
    """Loads a Hugging Face `tokenizer.json` (or a directory holding one)."""
    path = pathlib.Path(path)
    if path.is_dir():
      path = path / "tokenizer.json"
    if not path.is_file():
      raise FileNotFoundError(f"no tokenizer.json at {path}")
    return cls(hf_tokenizers.Tokenizer.from_file(str(path)), **kwargs)

  @classmethod
  def builtin(cls, **kwargs) -> "Tokenizer":
    """The tiny tokenizer shipped with the package (trained on the synthetic corpus); Qwen2-Audio
    chat format unless `chat_format=` / `system_prompt=` say otherwise."""
    if not kwargs:
      return _builtin()
    return cls(hf_tokenizers.Tokenizer.from_str(_builtin().backend.to_str()), **kwargs)

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def backend(self) -> hf_tokenizers.Tokenizer:
    return self._tok

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`; special-token strings in it become their ids."""
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def decode_batch(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]:
    return self._tok.decode_batch([[int(i) for i in ids] for ids in batch],
                                  skip_special_tokens=skip_special_tokens)

  def is_special(self, token_id: int) -> bool:
    return int(token_id) in self._special_ids

  def token_bytes(self, token_id: int) -> bytes:
    """The raw bytes a token stands for (b"" for special tokens).

    Byte-level BPE tokens may hold part of a UTF-8 character, so this is bytes, not str.
    """
    if self.is_special(token_id):
      return b""
    piece = self._tok.id_to_token(int(token_id))
    if piece is None:
      raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
    return bytes(_BYTE_DECODER[c] for c in piece)

  def encode_prompt(self, user_text: str, num_audio_tokens: int) -> list[int]:
    """The chat template of `chat_format` for one audio clip and one user turn, generation
    prompt on (prompts.chat_around_audio), with the audio placeholder already expanded to
    `num_audio_tokens` copies as the processors do. Qwen2-Audio's:

    `<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\nAudio 1: <|audio_bos|>
    <|AUDIO|>*num_audio_tokens<|audio_eos|>\\n{user_text}<|im_end|>\\n<|im_start|>assistant\\n`
    """
    if num_audio_tokens < 0:
      raise ValueError(f"num_audio_tokens must be >= 0, got {num_audio_tokens}")
    head, tail = prompts.chat_around_audio(user_text, self.chat_format, self.system_prompt)
    return self.encode(head) + [self.audio_id] * num_audio_tokens + self.encode(tail)


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte <-> printable-unicode table used by byte-level BPE."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
      range(ord("®"), ord("ÿ") + 1))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


def train_tokenizer(corpus: Iterable[str], vocab_size: int = BUILTIN_VOCAB_SIZE) -> Tokenizer:
  """Trains a byte-level BPE tokenizer with this project's special tokens (deterministic)."""
  tok = hf_tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(hf_tokenizers.Regex(BUILTIN_SPLIT_PATTERN), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size,
      special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  tok.train_from_iterator(corpus, trainer=trainer)
  return Tokenizer(tok)


@functools.cache
def _builtin() -> Tokenizer:
  asset = importlib.resources.files("cesar_jax") / "assets" / _ASSET
  if not asset.is_file():
    raise FileNotFoundError(
        f"the built-in tokenizer {asset} is missing; rebuild it with "
        "`python -m cesar_jax.tokenizers --rebuild`")
  return Tokenizer(hf_tokenizers.Tokenizer.from_str(asset.read_text()))


def builtin_corpus() -> Iterator[str]:
  """The text the built-in tokenizer is trained on: synthetic questions, options, traces, and
  the prompt's fixed text (chat template, instructions with every CESAR budget)."""
  from cesar_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  yield f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nAudio 1: "
  for budget in (None, *range(0, 251, 25)):
    yield prompts.format_question("Question?", ["first", "second"], think_budget=budget)
  for trace_times in (True, False):
    yield from synthetic.corpus("train", num_examples=2000, seed=0, trace_times=trace_times)


def _main() -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rebuild", action="store_true", help="retrain the built-in tokenizer")
  args = parser.parse_args()
  if args.rebuild:
    tok = train_tokenizer(builtin_corpus(), BUILTIN_VOCAB_SIZE)
    out = pathlib.Path(__file__).parent / "assets" / _ASSET
    out.write_text(tok.backend.to_str(pretty=False))
    print(f"wrote {out} (vocab {tok.vocab_size})")


if __name__ == "__main__":
  _main()
