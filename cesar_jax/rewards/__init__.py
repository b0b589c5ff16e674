"""Rewards: CESAR process rewards and outcome baselines, jitted and vectorised on token ids.

    from cesar_jax import rewards
    config = rewards.default_config("cesar")            # or "outcome", "ke_omni_r"
    out = rewards.score_texts(texts, examples, config, tokenizer)   # {component: f32[B], total}
    out = rewards.reference.score_texts(texts, examples, config, tokenizer)  # same, plain Python

Presets: "cesar", "outcome", "ke_omni_r", "audio_thinker", "mpar2" (`config.py`). A component
is a jitted function of the token scan (`registry.register`) or a host-side Python function of
the decoded completions with TRL's `reward_funcs` shape (`registry.register_python`; the
trainer computes them with `host_values` for the rows it holds); both are selected and weighted
in `config.weights`.

The trainer calls `build(config, tokenizer)` once and the returned `RewardFn` on token ids
inside its jitted step; `encode_examples` gives the per-prompt arrays. Definitions:
`reference.py`; words and hashing: `text.py`; adding a component: `registry.py`.
"""

from cesar_jax.rewards import cesar  # noqa: F401  (registers consistency, keywords, overthinking)
from cesar_jax.rewards import outcome  # noqa: F401  (registers accuracy, format, think_accuracy)
from cesar_jax.rewards import perception  # noqa: F401  (registers perception, answer_consistency)
from cesar_jax.rewards import reference  # noqa: F401  (registers the reference twins)
from cesar_jax.rewards import registry
from cesar_jax.rewards.api import RewardFn, apply, build, encode_examples, score_texts
from cesar_jax.rewards.config import PRESETS, default_config, register_preset
from cesar_jax.rewards.examples import repeat
from cesar_jax.rewards.host import RewardError, host_values, local_rows
from cesar_jax.rewards.parse import Batch, Parsed

__all__ = [
    "Batch", "PRESETS", "Parsed", "RewardError", "RewardFn", "apply", "build", "default_config",
    "encode_examples", "host_values", "local_rows", "perception", "reference", "register_preset",
    "registry", "repeat", "score_texts",
]
