"""The reward section of an experiment config: `default_config(preset)`.

    config.reward = rewards.default_config("cesar")          # in configs/*.py
    config.reward.weights.keywords = 0.5                      # a knob
    config.reward.keywords.domain.cap = 2.0

Weights, caps, max_think_tokens and min_word_length are traced by the jitted reward: changing
them does not recompile (`api.static_config`). Fields:
  preset        name the weights came from (informational).
  weights       {component: weight}; the components computed, in this order, and
                total = sum(weight * component) in float32 in this order. Names are looked
                up in the registry (`rewards.registry`), so a registered component is selected
                by adding it here.
  overthinking  max_think_tokens: L_max_output of R_overthinking = 1 - |t| / L (tokens).
  concepts      how C(x) of the consistency reward is extracted: words (see text.py), minus
                stopwords (checked on the normalised form), minus words shorter than
                min_word_length bytes, normalised (strip_plural_s); Q = question + options, and
                y_hat = the chosen option (or the answer's words when it names none).
  keywords      pattern / logic / domain: `phrases` ((phrase, weight), ...) and `cap`; each family
                scores min(cap, sum of weights of the distinct phrases present) / cap.
  format        answer_only: expect "<answer>...</answer>" with no think part (L_max = 0) for
                examples that carry no `think_budget` (those with think_budget == 0 always do).
  limits        static shapes of the example arrays; an example beyond them is an error that
                names it.
  guard         min_think_tokens: no process reward (consistency, keywords, overthinking) for
                a think part of fewer tokens (answer-only examples exempt). 0 = off, the
                paper's formula (the default). Traced. Why: issue 15; what it does and does not
                stop: tests/rewards/test_reward_gaming.py.
  perception    recall_weight, judge: the host-side `perception` reward (see
                `rewards/perception.py`); host only, not part of the compiled program.

Presets: "cesar", "outcome", "ke_omni_r", "audio_thinker", "mpar2" (sources beside each).
Components "perception" and "answer_consistency" are host-side Python functions
(`rewards/perception.py`); the others are jitted on token ids. "think_concepts" and
"keyword_density" (cesar.py) are diagnostics of the reward's optimum, to add with weight 0.
"""

from __future__ import annotations

import ml_collections

from cesar_jax.rewards import keywords

# CESAR (arXiv 2510.20867, Sec. 3.3): a1 = 5 (accuracy), a2 = a3 = a4 = a5 = 1.
CESAR_WEIGHTS = (("accuracy", 5.0), ("format", 1.0), ("consistency", 1.0), ("keywords", 1.0),
                 ("overthinking", 1.0))
# The RLVR baseline of CESAR: R = 1[y_hat == y] + 1[ValidFormat].
OUTCOME_WEIGHTS = (("accuracy", 1.0), ("format", 1.0))
# Ke-Omni-R: accuracy 2, format 1 (shared/REFERENCES.md, "Related systems").
KE_OMNI_R_WEIGHTS = (("accuracy", 2.0), ("format", 1.0))

# Audio-Thinker (shared/REFERENCES.md, "Related systems"): the adaptive think-accuracy reward
# (think and correct +1, think and wrong 0, no think and correct +2, no think and wrong -1) and
# the consistency reward (the think part's conclusion matches the answer), both weight 1 (the
# weights are not public: our choice). Its judged think-quality reward is left out (no judge
# here); the format term (weight 1) is our choice, as in every other preset.
AUDIO_THINKER_WEIGHTS = (("think_accuracy", 1.0), ("format", 1.0), ("answer_consistency", 1.0))
# MPAR^2 (arXiv 2603.02266; shared/REFERENCES.md): GRPO with perception, step, consistency,
# review and format rewards, judged by Gemini. What is public and judge-free here: accuracy,
# format, perception (judge-free: claims checked against the ground-truth events,
# rewards/perception.py) and consistency (conclusion vs answer). The step and review rewards
# (judged; combined by a geometric mean) are left out. Weights 1 each: our choice.
MPAR2_WEIGHTS = (("accuracy", 1.0), ("format", 1.0), ("perception", 1.0),
                 ("answer_consistency", 1.0))

PRESETS: dict[str, tuple[tuple[str, float], ...]] = {
    "cesar": CESAR_WEIGHTS,
    "outcome": OUTCOME_WEIGHTS,
    "ke_omni_r": KE_OMNI_R_WEIGHTS,
    "audio_thinker": AUDIO_THINKER_WEIGHTS,
    "mpar2": MPAR2_WEIGHTS,
}


def register_preset(name: str, weights: tuple[tuple[str, float], ...]) -> None:
  """Adds a named weighting (e.g. from an experiment module) for `default_config(name)`."""
  PRESETS[name] = tuple((str(k), float(v)) for k, v in weights)


def _family(phrases: tuple[str, ...], cap: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"phrases": tuple((p, 1.0) for p in phrases), "cap": cap})


def default_config(preset: str = "cesar") -> ml_collections.ConfigDict:
  """The reward config for a preset: "cesar", "outcome", "ke_omni_r", "audio_thinker", "mpar2"
  (or a registered one)."""
  if preset not in PRESETS:
    raise KeyError(f"unknown reward preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.weights = ml_collections.ConfigDict(dict(PRESETS[preset]))

  # Overthinking section. L_max_output = 256 tokens (CESAR, Sec. 3.3).
  c.overthinking = ml_collections.ConfigDict({"max_think_tokens": 256})

  # Concepts section (consistency). The paper does not publish its concept extraction.
  c.concepts = ml_collections.ConfigDict({
      "min_word_length": 2,  # Drops option letters ("b") and stray single characters.
      "strip_plural_s": True,
      "stopwords": keywords.STOPWORDS,
      "extra_stopwords": (),
  })

  # Keywords section. Weight 1 and cap 1: one phrase of a family saturates it (our choice; the
  # paper only says each reward is normalised to [0, 1]). A concise, well-structured think part
  # (a sequencing or comparison marker, a logical connective, an acoustic term) then gets the
  # whole keyword reward, and keyword stuffing earns nothing: with caps of 2, a bare keyword
  # list as think part out-scored a correct, grounded, structured completion
  # (tests/rewards/test_reward_gaming.py).
  c.keywords = ml_collections.ConfigDict({
      "pattern": _family(keywords.PATTERN, 1.0),
      "logic": _family(keywords.LOGIC, 1.0),
      "domain": _family(keywords.DOMAIN, 1.0),
  })

  # Format section.
  c.format = ml_collections.ConfigDict({"answer_only": False})

  # Guard section (issue 15): off by default, the paper's formula. A short bag of question
  # concepts plus one keyword per family out-scores a full, correct reasoning under CESAR's
  # reward (Sim divides by the larger concept set; the overthinking term pays for brevity).
  # min_think_tokens = m > 0 pays no process reward to a think part under m tokens.
  c.guard = ml_collections.ConfigDict({"min_think_tokens": 0})

  # Perception section (the host-side `perception` reward; MPAR^2 without its judge).
  c.perception = ml_collections.ConfigDict({
      "recall_weight": 0.5,  # perception = precision + 0.5 * recall (our choice).
      "judge": "",  # A name from rewards.perception.register_judge, for records without events.
  })

  # Limits section (static shapes of the per-example arrays and token tables).
  c.limits = ml_collections.ConfigDict({
      "max_options": 8,  # MMAU test-mini has one 8-option item.
      "max_option_words": 48,  # MMAR has a 40-word option.
      "max_question_concepts": 128,  # Question + options: MMAU test-mini needs 38, MMAR 57.
      "max_inner_words": 4,  # Complete words inside one token (e.g. "a.b" in one token).
      "max_phrase_words": 3,  # Words in one keyword phrase segment (one scan level each).
  })
  return c
