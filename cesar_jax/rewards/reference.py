"""Plain-Python reference: what each reward MEANS, on decoded text. Used by tests and benchmarks.

The jitted token-id implementation (`cesar_jax.rewards.score_texts` / `build`) must return the
same values; tests hold them equal. Definitions (words, whitespace, normaliser: `text.py`):

* Parsing. Special-token strings in the text (as the tokenizer would split them) are separators;
  `<think>`, `</think>`, `<answer>`, `</answer>` are tags. Text is normalised as the tokenizer
  does before it is tokenised (e.g. NFC for Qwen; the built-in tokenizer has no normaliser).
* format = 1 iff the text is `WS <think> T </think> WS <answer> Y </answer> WS` (WS: ASCII
  whitespace only, possibly empty; T, Y: anything without tags, possibly empty; exactly one of
  each tag). For an answer-only example (think_budget == 0) the form is `WS <answer> Y </answer>
  WS` instead.
* accuracy = 1 iff the answer names the correct option. The answer is the content between the
  first `<answer>` and the first `</answer>` after it (format not required). Its normalised
  words name option i when they are exactly [letter_i], option_i's words, or [letter_i] +
  option_i's words ("B", "(b)", "piano", "B. Pianos" for option (B) "piano"); the answer
  chooses option i when it names i and no other option.
* Process components are 0 unless format = 1 (a malformed or truncated completion earns no
  process reward; this gating is the project's choice), and, with the guard
  `guard.min_think_tokens` = m > 0 (off by default), 0 when |t| < m tokens unless the example
  expects the answer-only form:
  - consistency = Sim(t, y_hat) + Sim(t, Q) in [0, 2], Sim(x, y) = |C(x) & C(y)| /
    max(|C(x)|, |C(y)|) (0 when both are empty), C = concept set (`examples.concepts`), t the
    think words, Q the question's and options' words, y_hat the chosen option's words, or the
    answer's words when it chooses no option.
  - keywords = pattern + logic + domain in [0, 3], each min(cap, sum of the weights of the
    distinct phrases present in the think part) / cap; phrases match normalised words
    (default weights and caps 1: one phrase saturates a family).
  - overthinking = clip(1 - |t| / max_think_tokens, 0, 1), |t| the number of tokens of the think
    part (0 for the answer-only form).
* think_accuracy (Audio-Thinker): +1 / 0 when the completion thinks and is correct / wrong,
  +2 / -1 when it does not think; it thinks when the first `</think>` comes after the first
  `<think>` with at least one token between them (the format is not required).
* Diagnostics (weight 0, to log): think_concepts = |C(t)| (0 unless format = 1);
  keyword_density = keyword phrases present in t (all families) / |t| tokens (0 unless format
  = 1 and |t| > 0).
* Python components (`registry.register_python`) are their own reference: both paths call
  `host.host_values` on the texts.
* total = sum of weight * component, in config order. Arithmetic is float32 throughout, in the
  same order as the jitted path, so the two agree bit for bit with the default config. With
  arbitrary weights (0.1, ...) the total may differ in the last bit (XLA may fuse a multiply-add)
  and keyword sums of several phrases may too (summation order); components otherwise agree
  exactly.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from cesar_jax import tokenizers as tok_lib
from cesar_jax.rewards import examples as ex_lib
from cesar_jax.rewards import host as host_lib
from cesar_jax.rewards import registry
from cesar_jax.rewards import text

FAMILIES = ("pattern", "logic", "domain")
_TAGS = {tok_lib.THINK_OPEN: "to", tok_lib.THINK_CLOSE: "tc", tok_lib.ANSWER_OPEN: "ao",
         tok_lib.ANSWER_CLOSE: "ac"}


@dataclasses.dataclass
class Parsed:
  """One completion, parsed. `pieces`: (kind, raw string, normalised string), kind in
  {"text", "special", "to", "tc", "ao", "ac"}."""
  pieces: list[tuple[str, str, str]]
  format_ok: bool
  answer_words: list[bytes] | None  # None: no closed answer.
  think_words: list[bytes]  # Empty unless format_ok (and the think form).
  think_text: str  # Raw text of the think part ("" unless format_ok).
  chosen: int | None  # Option the answer chooses.
  think_tokens: int = 0  # Tokens of think_text (score_texts encodes all think texts at once).


@dataclasses.dataclass
class Context:
  """What a reference component sees besides the parse."""
  example: Mapping[str, Any]
  answer_index: int
  config: ml_collections.ConfigDict
  stopwords: frozenset[bytes]
  tokenizer: tok_lib.Tokenizer
  strip: bool  # config.concepts.strip_plural_s
  # {family: ([(segments, weight)], cap)}, the keyword phrases as normalised word segments.
  phrases: Mapping[str, tuple[list[tuple[list[tuple[bytes, ...]], float]], float]]


def _special_regex(tokenizer: tok_lib.Tokenizer) -> re.Pattern:
  specials = sorted((t.content for t in tokenizer.backend.get_added_tokens_decoder().values()
                     if t.special), key=len, reverse=True)
  return re.compile("(" + "|".join(map(re.escape, specials)) + ")")


def split_pieces(completion: str, tokenizer: tok_lib.Tokenizer,
                 special_re: re.Pattern | None = None) -> list[tuple[str, str, str]]:
  special_re = special_re or _special_regex(tokenizer)
  normalizer = tokenizer.backend.normalizer
  pieces = []
  for i, part in enumerate(special_re.split(completion)):
    if i % 2:
      pieces.append((_TAGS.get(part, "special"), part, ""))
    elif part:
      pieces.append(("text", part, normalizer.normalize_str(part) if normalizer else part))
  return pieces


def _is_ws(piece: tuple[str, str, str]) -> bool:
  return piece[0] == "text" and all(c in text.WHITESPACE_STR for c in piece[2])


def _words(pieces: Sequence[tuple[str, str, str]]) -> list[bytes]:
  return [w for kind, _, norm in pieces if kind == "text" for w in text.words(norm)]


def well_formed(pieces: Sequence[tuple[str, str, str]], answer_only: bool) -> bool:
  tag_at = [i for i, p in enumerate(pieces) if p[0] != "text" and p[0] != "special"]
  kinds = [pieces[i][0] for i in tag_at]
  if kinds != (["ao", "ac"] if answer_only else ["to", "tc", "ao", "ac"]):
    return False
  outside = pieces[:tag_at[0]] + pieces[tag_at[-1] + 1:]
  if not answer_only:
    outside += pieces[tag_at[1] + 1:tag_at[2]]
  return all(_is_ws(p) for p in outside)


def chosen_option(answer_words: Sequence[bytes] | None, choices: Sequence[str],
                  strip_plural_s: bool) -> int | None:
  if answer_words is None:
    return None
  answer = tuple(text.normalize(w, strip_plural_s) for w in answer_words)
  named = [i for i, pats in enumerate(ex_lib.option_patterns(choices, strip_plural_s))
           if answer in pats]
  return named[0] if len(named) == 1 else None


def parse(completion: str, example: Mapping[str, Any], config: ml_collections.ConfigDict,
          tokenizer: tok_lib.Tokenizer, special_re: re.Pattern | None = None) -> Parsed:
  pieces = split_pieces(completion, tokenizer, special_re)
  answer_only = ex_lib.answer_only(example, config)
  ok = well_formed(pieces, answer_only)
  kinds = [p[0] for p in pieces]
  answer_words = None
  if "ao" in kinds:
    start = kinds.index("ao")
    if "ac" in kinds[start:]:
      end = kinds.index("ac", start)
      answer_words = _words(pieces[start + 1:end])
  think_words, think_text = [], ""
  if ok and not answer_only:
    inner = pieces[kinds.index("to") + 1:kinds.index("tc")]
    think_words = _words(inner)
    think_text = "".join(p[1] for p in inner)
  return Parsed(pieces, ok, answer_words, think_words, think_text,
                chosen_option(answer_words, [str(c) for c in example["choices"]],
                              bool(config.concepts.strip_plural_s)))


def sim(a: set, b: set) -> np.float32:
  d = max(len(a), len(b))
  return np.float32(len(a & b)) / np.float32(d) if d else np.float32(0)


# Components --------------------------------------------------------------------------------

RefComponent = Callable[[Parsed, Context], np.float32]


def format_reward(p: Parsed, ctx: Context) -> np.float32:
  del ctx
  return np.float32(p.format_ok)


def accuracy_reward(p: Parsed, ctx: Context) -> np.float32:
  return np.float32(p.chosen is not None and p.chosen == ctx.answer_index)


def process_gate(p: Parsed, ctx: Context) -> bool:
  """Whether the completion earns process reward (format; the guard's minimum think length)."""
  guard = ctx.config.get("guard", None) or {}
  minimum = int(guard.get("min_think_tokens", 0))
  return p.format_ok and (ex_lib.answer_only(ctx.example, ctx.config) or
                          p.think_tokens >= minimum)


def think_accuracy_reward(p: Parsed, ctx: Context) -> np.float32:
  kinds = [piece[0] for piece in p.pieces]
  thinks = False
  if "to" in kinds and "tc" in kinds:
    thinks = kinds.index("tc") > kinds.index("to") + 1  # A piece between: >= 1 token.
  acc = accuracy_reward(p, ctx)
  return acc if thinks else np.float32(3) * acc - np.float32(1)


def consistency_reward(p: Parsed, ctx: Context) -> np.float32:
  if not process_gate(p, ctx):
    return np.float32(0)
  c_think = ex_lib.concepts(p.think_words, ctx.config, ctx.stopwords)
  c_q = ex_lib.concepts(ex_lib.question_words(ctx.example), ctx.config, ctx.stopwords)
  if p.chosen is not None:
    y_words = text.words(str(ctx.example["choices"][p.chosen]))
  else:
    y_words = p.answer_words or []
  c_y = ex_lib.concepts(y_words, ctx.config, ctx.stopwords)
  return sim(c_think, c_y) + sim(c_think, c_q)


def _ngram_spans(seq: Sequence[bytes], max_n: int) -> dict[tuple[bytes, ...], tuple[int, int]]:
  """{n-gram: (first start, last start)} for n = 1..max_n."""
  spans: dict[tuple[bytes, ...], tuple[int, int]] = {}
  for n in range(1, max_n + 1):
    for i in range(len(seq) - n + 1):
      g = tuple(seq[i:i + n])
      spans[g] = (spans[g][0], i) if g in spans else (i, i)
  return spans


def phrase_present(spans: Mapping[tuple[bytes, ...], tuple[int, int]],
                   segments: Sequence[tuple[bytes, ...]]) -> bool:
  """A phrase is present when its words occur contiguously; with a gap ("a ... b"), when an
  occurrence of the first segment ends before an occurrence of the second starts."""
  if len(segments) == 1:
    return segments[0] in spans
  if len(segments) != 2:
    raise ValueError(f"keyword phrase {segments}: at most one '...' gap is supported")
  first, second = spans.get(segments[0]), spans.get(segments[1])
  return bool(first and second) and first[0] + len(segments[0]) - 1 < second[1]


def compile_phrases(family: ml_collections.ConfigDict, strip: bool
                    ) -> list[tuple[list[tuple[bytes, ...]], float]]:
  return [(text.phrase_words(phrase, strip), float(weight)) for phrase, weight in family.phrases]


def keyword_family(spans: Mapping[tuple[bytes, ...], tuple[int, int]],
                   phrases: Sequence[tuple[Sequence[tuple[bytes, ...]], float]],
                   cap: float) -> np.float32:
  total = np.float32(0)
  for segments, weight in phrases:
    if phrase_present(spans, segments):
      total = total + np.float32(weight)
  cap = np.float32(cap)
  return np.minimum(cap, total) / cap


def keywords_reward(p: Parsed, ctx: Context) -> np.float32:
  if not process_gate(p, ctx):
    return np.float32(0)
  norm = [text.normalize(w, ctx.strip) for w in p.think_words]
  spans = _ngram_spans(norm, max((len(s) for ph, _ in ctx.phrases.values() for s, _ in ph),
                                 default=1))
  return sum((keyword_family(spans, ctx.phrases[f][0], ctx.phrases[f][1]) for f in FAMILIES),
             np.float32(0))


def overthinking_reward(p: Parsed, ctx: Context) -> np.float32:
  if not process_gate(p, ctx):
    return np.float32(0)
  limit = np.float32(ctx.config.overthinking.max_think_tokens)
  return np.clip(np.float32(1) - np.float32(p.think_tokens) / limit, np.float32(0), np.float32(1))


def think_concepts(p: Parsed, ctx: Context) -> np.float32:
  if not p.format_ok:
    return np.float32(0)
  return np.float32(len(ex_lib.concepts(p.think_words, ctx.config, ctx.stopwords)))


def keyword_density(p: Parsed, ctx: Context) -> np.float32:
  if not p.format_ok or p.think_tokens == 0:
    return np.float32(0)
  norm = [text.normalize(w, ctx.strip) for w in p.think_words]
  spans = _ngram_spans(norm, max((len(s) for ph, _ in ctx.phrases.values() for s, _ in ph),
                                 default=1))
  n = sum(phrase_present(spans, segments) for f in FAMILIES for segments, _ in ctx.phrases[f][0])
  return np.float32(n) / np.float32(p.think_tokens)


for _name, _fn in (("format", format_reward), ("accuracy", accuracy_reward),
                   ("consistency", consistency_reward), ("keywords", keywords_reward),
                   ("overthinking", overthinking_reward), ("think_accuracy", think_accuracy_reward),
                   ("think_concepts", think_concepts), ("keyword_density", keyword_density)):
  registry.register_reference(_name, _fn)


def score_texts(completions: Sequence[str], examples: Sequence[Mapping[str, Any]],
                reward_config: ml_collections.ConfigDict,
                tokenizer: tok_lib.Tokenizer) -> dict[str, np.ndarray]:
  """Scores each completion (the text after `<|im_start|>assistant\\n`, no `<|im_end|>`) against
  its example (question, choices, answer[, think_budget]). Returns {component: f32[B], "total"}."""
  if len(completions) != len(examples):
    raise ValueError(f"score_texts: {len(completions)} completions but {len(examples)} examples")
  names = list(reward_config.weights.keys())
  host_names, host_values = host_lib.host_values(reward_config, completions, examples,
                                                 tokenizer=tokenizer)
  fns = {n: registry.get_reference(n) for n in names if n not in host_names}
  stop = ex_lib.stopword_set(reward_config)
  strip = bool(reward_config.concepts.strip_plural_s)
  phrases = {f: (compile_phrases(reward_config.keywords[f], strip),
                 float(reward_config.keywords[f].cap)) for f in FAMILIES}
  special_re = _special_regex(tokenizer)
  out = {n: np.zeros([len(completions)], np.float32) for n in names + ["total"]}
  parsed = [parse(c, ex, reward_config, tokenizer, special_re)
            for c, ex in zip(completions, examples)]
  for p, ids in zip(parsed, tokenizer.encode_batch([p.think_text for p in parsed])):
    p.think_tokens = len(ids)
  for i, (p, ex) in enumerate(zip(parsed, examples)):
    ctx = Context(ex, ex_lib.answer_index(ex, i), reward_config, stop, tokenizer, strip, phrases)
    total = np.float32(0)
    for n in names:
      value = (host_values[i, host_names.index(n)] if n in host_names
               else np.float32(fns[n](p, ctx)))
      out[n][i] = value
      total = total + np.float32(reward_config.weights[n]) * value
    out["total"][i] = total
  return out
