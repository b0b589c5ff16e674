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

A component may instead be a host-side Python function with TRL's `reward_funcs` shape
(`register_python`), batched over the rows a process holds:

    @registry.register_python("mentions_answer")
    def mentions_answer(completions, examples, **kw):
      return [float(str(ex["answer"]).lower() in c.lower()) for c, ex in zip(completions, examples)]

    config.reward.weights.mentions_answer = 0.5

`completions` are the decoded texts (before `<|im_end|>`), `examples` one dict per completion
with every field of its record (e.g. `events` for the synthetic set); keyword arguments are
`config` (the reward config) and `tokenizer`; accept `**kw` for more in future. It returns one
finite float per completion. Python components are selected and weighted exactly like jitted
ones (`rewards.host` computes them; the jitted reward adds weight * value into the total and
they are their own plain-Python reference).
"""

from __future__ import annotations

from typing import Any, Callable

Component = Callable[..., Any]

_COMPONENTS: dict[str, Component] = {}
_REFERENCES: dict[str, Component] = {}
_PYTHON: dict[str, Component] = {}


def register(name: str, fn: Component | None = None, *, overwrite: bool = False):
  """Registers a jitted component under `name` (usable as a decorator)."""
  def add(f: Component) -> Component:
    _check_free(name, f, overwrite)
    _PYTHON.pop(name, None)
    _COMPONENTS[name] = f
    return f
  return add(fn) if fn is not None else add


def register_python(name: str, fn: Component | None = None, *, overwrite: bool = False):
  """Registers a host-side Python component `fn(completions, examples, **kw) -> list[float]`
  under `name` (usable as a decorator); see the module docstring."""
  def add(f: Component) -> Component:
    _check_free(name, f, overwrite)
    _COMPONENTS.pop(name, None)
    _PYTHON[name] = f
    return f
  return add(fn) if fn is not None else add


def _check_free(name: str, f: Component, overwrite: bool) -> None:
  other = _COMPONENTS.get(name, _PYTHON.get(name))
  if other is not None and other is not f and not overwrite:
    raise ValueError(f"reward component {name!r} is already registered "
                     f"({other.__module__}); pass overwrite=True to replace it")


def register_reference(name: str, fn: Component | None = None, *, overwrite: bool = True):
  """Registers the plain-Python twin of component `name` (usable as a decorator)."""
  def add(f: Component) -> Component:
    if name in _REFERENCES and _REFERENCES[name] is not f and not overwrite:
      raise ValueError(f"reference reward component {name!r} is already registered")
    _REFERENCES[name] = f
    return f
  return add(fn) if fn is not None else add


def get(name: str) -> Component:
  """The jitted component `name`, or the Python one (see `is_python`)."""
  if name in _PYTHON:
    return _PYTHON[name]
  if name not in _COMPONENTS:
    raise KeyError(f"unknown reward component {name!r} (config reward.weights); registered: "
                   f"{', '.join(names())}")
  return _COMPONENTS[name]


def is_python(name: str) -> bool:
  """Whether `name` is a host-side Python component (`register_python`)."""
  get(name)  # Unknown names fail, naming the key.
  return name in _PYTHON


def get_reference(name: str) -> Component:
  if name not in _REFERENCES:
    raise KeyError(f"reward component {name!r} has no plain-Python reference; registered: "
                   f"{', '.join(sorted(_REFERENCES))}")
  return _REFERENCES[name]


def names() -> list[str]:
  return sorted(set(_COMPONENTS) | set(_PYTHON))
