"""Reward components by name: add one here and select it in the config, not in the trainer.

A component is a jit-compatible pure function

    fn(batch: rewards.parse.Batch, config: ml_collections.FrozenConfigDict) -> f32[B]

`batch.parsed` holds what every component needs, computed once from the token ids (format,
think length, the option the answer chooses, and the token scan's results: word keys per slot,
tag positions, answer word count, keyword bit sets, concept sort keys; see `parse.Parsed` and
`scan.Scan`); `batch.examples` the per-example arrays of `encode_examples` (one row per
completion); `batch.ids` / `batch.lengths` the completions; `batch.tables` the vocabulary and
keyword tables; `config` the reward config (frozen, so it is hashable and static under jit).

    from cesar_jax.rewards import registry

    @registry.register("short_answer")
    def short_answer(batch, config):
      n = batch.parsed.scan.answer_words
      return (batch.parsed.format_ok & (n <= config.short_answer.max_words)).astype(jnp.float32)

    config.reward.short_answer = ml_collections.ConfigDict({"max_words": 3})
    config.reward.weights.short_answer = 0.5   # selected, with its weight

A component may also have a plain-Python twin on decoded text (`register_reference`,
signature `fn(parsed: reference.Parsed, ctx: reference.Context) -> float`) so tests can hold
the two equal; `reference.score_texts` raises for a component without one.
"""

from __future__ import annotations

from typing import Any, Callable

Component = Callable[..., Any]

_COMPONENTS: dict[str, Component] = {}
_REFERENCES: dict[str, Component] = {}


def register(name: str, fn: Component | None = None, *, overwrite: bool = False):
  """Registers a jitted component under `name` (usable as a decorator)."""
  def add(f: Component) -> Component:
    if name in _COMPONENTS and _COMPONENTS[name] is not f and not overwrite:
      raise ValueError(f"reward component {name!r} is already registered "
                       f"({_COMPONENTS[name].__module__}); pass overwrite=True to replace it")
    _COMPONENTS[name] = f
    return f
  return add(fn) if fn is not None else add


def register_reference(name: str, fn: Component | None = None, *, overwrite: bool = True):
  """Registers the plain-Python twin of component `name` (usable as a decorator)."""
  def add(f: Component) -> Component:
    if name in _REFERENCES and _REFERENCES[name] is not f and not overwrite:
      raise ValueError(f"reference reward component {name!r} is already registered")
    _REFERENCES[name] = f
    return f
  return add(fn) if fn is not None else add


def get(name: str) -> Component:
  if name not in _COMPONENTS:
    raise KeyError(f"unknown reward component {name!r} (config reward.weights); registered: "
                   f"{', '.join(sorted(_COMPONENTS))}")
  return _COMPONENTS[name]


def get_reference(name: str) -> Component:
  if name not in _REFERENCES:
    raise KeyError(f"reward component {name!r} has no plain-Python reference; registered: "
                   f"{', '.join(sorted(_REFERENCES))}")
  return _REFERENCES[name]


def names() -> list[str]:
  return sorted(_COMPONENTS)
