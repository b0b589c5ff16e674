"""CESAR's process rewards on token ids: consistency, keywords, overthinking (jitted).

CESAR (Fan et al., ICLR 2026, arXiv 2510.20867, Sec. 3.3). Definitions, including the project's
choices where the paper is silent (concept extraction, keyword lists and caps, gating on the
format), are in `reference.py`; tests hold these functions equal to it.

All three are gated by `process_gate`: 0 for a malformed completion, and, with the guard
`config.guard.min_think_tokens` > 0 (off by default: the paper's formula), 0 for a think part
shorter than that many tokens (issue 15: a short bag of question concepts plus one keyword per
family out-scores a full, correct reasoning; see `config.py` and tests/rewards/test_reward_gaming.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from cesar_jax.rewards import concepts
from cesar_jax.rewards import parse as parse_lib
from cesar_jax.rewards import registry
from cesar_jax.rewards import tables as tbl


def _ratio(num: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """num / max(a, b) in float32, 0 when both are 0 (Sim of the paper)."""
  d = jnp.maximum(a, b)
  return jnp.where(d > 0, num.astype(jnp.float32) / jnp.maximum(d, 1).astype(jnp.float32), 0.0)


def process_gate(batch: parse_lib.Batch) -> jax.Array:
  """bool[B]: the completion earns process reward (well formed; think part long enough, or the
  answer-only form, which has none)."""
  p = batch.parsed
  long_enough = p.think_tokens >= batch.tables["params"]["min_think_tokens"]
  return p.format_ok & (p.answer_only | long_enough)


@registry.register("consistency")
def consistency_reward(batch: parse_lib.Batch,
                       config: ml_collections.FrozenConfigDict) -> jax.Array:
  """Sim(t, y_hat) + Sim(t, Q) with Sim(x, y) = |C(x) & C(y)| / max(|C(x)|, |C(y)|)."""
  p, ex = batch.parsed, batch.examples
  c = concepts.counts(batch, config)
  y_len = jnp.take_along_axis(ex["option_concepts_len"], jnp.maximum(p.chosen, 0)[:, None],
                              1)[:, 0]
  sim_y = jnp.where(p.chosen >= 0, _ratio(c.think_option, c.think, y_len),
                    _ratio(c.think_answer, c.think, c.answer))
  sim_q = _ratio(c.think_question, c.think, ex["question_concepts_len"])
  return jnp.where(process_gate(batch), sim_y + sim_q, 0.0)


def phrase_presence(batch: parse_lib.Batch) -> jax.Array:
  """bool[B, P]: keyword phrase p occurs in the think part (normalised words).

  From the scan's bit sets of segments found in the think part; a gap phrase "a ... b" is
  present when some "a" ends before some "b" starts (word ranks).
  """
  sc, tables = batch.parsed.scan, batch.tables
  words = sc.keyword_bits[:, tables["phrase_word"]]  # [B, P]
  present = ((words >> tables["phrase_bit"][None, :]) & 1) > 0
  for g, (phrase, _, _) in enumerate(batch.static.gap_phrases):
    present = present.at[:, phrase].set(sc.gap_first_end[:, g] < sc.gap_last_start[:, g])
  return present


@registry.register("keywords")
def keywords_reward(batch: parse_lib.Batch, config: ml_collections.FrozenConfigDict) -> jax.Array:
  """pattern + logic + domain, each min(cap, sum of weights of phrases present) / cap."""
  present = phrase_presence(batch).astype(jnp.float32)
  weight, family = batch.tables["phrase_weight"], batch.tables["phrase_family"]
  total = jnp.zeros(present.shape[:1], jnp.float32)
  for f, name in enumerate(tbl.FAMILIES):
    s = jnp.sum(present * jnp.where(family == f, weight, 0.0)[None, :], axis=1)
    cap = batch.tables["params"]["caps"][f]
    total = total + jnp.minimum(cap, s) / cap
  return jnp.where(process_gate(batch), total, 0.0)


@registry.register("overthinking")
def overthinking_reward(batch: parse_lib.Batch,
                        config: ml_collections.FrozenConfigDict) -> jax.Array:
  """clip(1 - |t| / max_think_tokens, 0, 1), |t| in tokens (CESAR: L_max_output = 256)."""
  p = batch.parsed
  limit = batch.tables["params"]["max_think_tokens"]
  value = jnp.clip(1.0 - p.think_tokens.astype(jnp.float32) / limit, 0.0, 1.0)
  return jnp.where(process_gate(batch), value, 0.0)


# Diagnostics of the reward's optimum (issue 15): logged with weight 0 (e.g.
# `config.rewards.weights.think_concepts = 0.0`), they show whether a policy drifts toward a
# short bag of concepts. Not gated by the guard.


@registry.register("think_concepts")
def think_concepts(batch: parse_lib.Batch, config: ml_collections.FrozenConfigDict) -> jax.Array:
  """|C(t)|: distinct concepts of the think part (0 unless well formed)."""
  c = concepts.counts(batch, config)
  return jnp.where(batch.parsed.format_ok, c.think, 0).astype(jnp.float32)


@registry.register("keyword_density")
def keyword_density(batch: parse_lib.Batch, config: ml_collections.FrozenConfigDict) -> jax.Array:
  """Keyword phrases present in the think part (all families) per think token (0 unless well
  formed with a non-empty think part)."""
  del config
  p = batch.parsed
  n = jnp.sum(phrase_presence(batch).astype(jnp.float32), axis=1)
  t = p.think_tokens
  return jnp.where(p.format_ok & (t > 0), n / jnp.maximum(t, 1).astype(jnp.float32), 0.0)
