"""Tiny models and prompts for the sampler tests.

`scripted_model` turns the tiny AudioLM into a bigram machine with a known greedy path: every
layer's output projections are zero, so the final hidden state is the normalised embedding of
the current token, and the LM head maps each scripted token to its successor with a large
margin. Its greedy completion after the prompt is

    <think> a b c </think> <answer> y </answer> <|im_end|>

(natural think length 3), which lets the budget tests predict every token. The extend
tests' continuation is `W V`: after `W` the model would say `y` (so forcing `V` shows), after
`V` it resumes the script at `a`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cesar_jax.models import audio_lm
from cesar_jax.models import config as model_config
from cesar_jax.sampling import budgets as budgets_lib
from cesar_jax.sampling import sampler as sampler_lib

PAD, EOS, THINK, END_THINK, ANSWER, END_ANSWER = 0, 2, 5, 6, 7, 8
A, B, C, Y = 20, 21, 22, 30
W, V = 25, 26  # the extend continuation (think "Wait ,")
CONTINUATION = (W, V)
LAST_PROMPT_TOKEN = 12
SCRIPT = {LAST_PROMPT_TOKEN: THINK, THINK: A, A: B, B: C, C: END_THINK, END_THINK: ANSWER,
          ANSWER: Y, Y: END_ANSWER, END_ANSWER: EOS, W: Y, V: A}
TAGS = budgets_lib.TagIds(think_open=THINK, think_close=END_THINK, answer_open=ANSWER)
FEATURE_FRAMES = 32


def tiny_config() -> model_config.AudioLMConfig:
  return model_config.preset("tiny", encoder_layers=1, num_mel_bins=16)


def random_model(seed: int = 0) -> audio_lm.AudioLM:
  return audio_lm.AudioLM(tiny_config(), rngs=nnx.Rngs(seed))


def scripted_model(margin: float = 4.0) -> audio_lm.AudioLM:
  model = random_model()
  lm = model.language_model
  layers = lm.layers  # stacked: every layer's kernel at once
  layers.self_attn.o_proj.kernel[...] = jnp.zeros_like(layers.self_attn.o_proj.kernel[...])
  layers.mlp.down_proj.kernel[...] = jnp.zeros_like(layers.mlp.down_proj.kernel[...])
  vocab, hidden = lm.config.vocab_size, lm.config.hidden_size
  emb = jax.random.normal(jax.random.key(1), (vocab, hidden))
  lm.embed_tokens.embedding[...] = emb
  normed = emb * jax.lax.rsqrt(jnp.mean(emb * emb, axis=-1, keepdims=True) + 1e-6)
  head = 0.01 * jax.random.normal(jax.random.key(2), (hidden, vocab))
  for cur, nxt in SCRIPT.items():
    head = head.at[:, nxt].add(margin * normed[cur] / hidden**0.5)
  lm.norm.scale[...] = jnp.ones_like(lm.norm.scale[...])
  lm.lm_head.kernel[...] = head
  return model


def sampler_config(**kwargs) -> sampler_lib.SamplerConfig:
  kwargs.setdefault("max_new_tokens", 16)
  kwargs.setdefault("prompt_buckets", (16, 32))
  return sampler_lib.SamplerConfig(tags=TAGS, pad_id=PAD, stop_ids=(EOS,), **kwargs)


def prompts(text_lengths, feature_lengths=None, seed: int = 0) -> dict:
  """Prompts `[text..., <AUDIO> x n, text..., 12]` of different lengths (lists, unpadded)."""
  rng = np.random.default_rng(seed)
  audio_id = tiny_config().audio_token_id
  feature_lengths = feature_lengths or [FEATURE_FRAMES] * len(text_lengths)
  ids = []
  for t, f in zip(text_lengths, feature_lengths):
    text = rng.integers(40, 300, size=t).tolist()
    n = int(audio_lm.num_audio_tokens(np.array(f)))
    ids.append(text[: t // 2] + [audio_id] * n + text[t // 2:] + [LAST_PROMPT_TOKEN])
  feats = rng.normal(size=(len(ids), 16, FEATURE_FRAMES)).astype(np.float32)
  fmask = (np.arange(FEATURE_FRAMES)[None] < np.array(feature_lengths)[:, None]).astype(np.int32)
  return {"input_ids": ids, "input_features": feats, "feature_attention_mask": fmask}
