"""Host-side Python reward components: one call computes all of them for the rows a process holds.

    names, values = rewards.host.host_values(config.reward, completions, examples,
                                             tokenizer=tokenizer)   # values: f32[N_rows, C]
    out = reward_fn(ids, lengths, arrays, host_values=values)        # inside jit

`completions` (decoded texts, before `<|im_end|>`) and `examples` (one dict per completion, every
field of its record) may be any subset of a step's rows: a process computes the values of the
rows it holds (`local_rows`) and the jitted reward adds `weight * value` into `total` for each
component, in config order, exactly as for a jitted component. `names` are the Python
components of `config.weights`, in that order (the columns of `values`); with none, `values`
is float32[N, 0].

A component that raises, returns the wrong number of values, or a non-finite value is an error
naming the component and the example (its `id`). When a component raises on the whole batch,
it is called again row by row to find the first example it raises on.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from cesar_jax.parallel import distributed
from cesar_jax.rewards import examples as ex_lib
from cesar_jax.rewards import registry


class RewardError(ValueError):
  """A Python reward component could not score a row; the message names component and example.

  Components raise it themselves for bad input they detect (e.g. a record without ground
  truth), so that the message says what is missing; it passes through `host_values` as is.
  """


def python_names(reward_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The Python components of `reward_config.weights`, in config order."""
  return tuple(n for n in reward_config.weights.keys() if registry.is_python(n))


def _name(examples: Sequence[Mapping[str, Any]], row: int) -> str:
  return f"example {ex_lib.example_id(examples[row], row)!r} (row {row})"


def _locate(fn, name: str, completions, examples, kw, error: Exception) -> RewardError:
  """The first row `fn` raises on alone, as a RewardError (or the batch, if no row does)."""
  for i in range(len(completions)):
    try:
      fn(completions[i:i + 1], examples[i:i + 1], **kw)
    except RewardError as e:
      return e
    except Exception as e:  # pylint: disable=broad-except
      return RewardError(f"reward component {name!r} raised on {_name(examples, i)}: "
                         f"{type(e).__name__}: {e}")
  ids = [ex_lib.example_id(ex, i) for i, ex in enumerate(examples)]
  shown = ", ".join(map(repr, ids[:8])) + (", ..." if len(ids) > 8 else "")
  return RewardError(f"reward component {name!r} raised on the batch of examples {shown} "
                     f"(on no single row alone): {type(error).__name__}: {error}")


def call(name: str, completions: Sequence[str], examples: Sequence[Mapping[str, Any]],
         **kw) -> np.ndarray:
  """One Python component on a batch -> float32[N], checked (see the module docstring)."""
  fn = registry.get(name)
  completions, examples = list(completions), list(examples)
  try:
    values = fn(completions, examples, **kw)
  except RewardError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise _locate(fn, name, completions, examples, kw, e) from e
  try:
    values = [float(v) for v in values]
  except (TypeError, ValueError) as e:
    raise RewardError(f"reward component {name!r} returned {values!r}, not a list of floats "
                      f"(one per completion)") from e
  if len(values) != len(completions):
    raise RewardError(f"reward component {name!r} returned {len(values)} values for "
                      f"{len(completions)} completions")
  for i, v in enumerate(values):
    if not math.isfinite(v):
      raise RewardError(f"reward component {name!r} returned {v} for {_name(examples, i)}")
  return np.asarray(values, np.float32)


def host_values(reward_config: ml_collections.ConfigDict, completions: Sequence[str],
                examples: Sequence[Mapping[str, Any]], **kw) -> tuple[tuple[str, ...], np.ndarray]:
  """(names, float32[N, C]): every Python component of the config on these rows.

  Keyword arguments (e.g. `tokenizer`) are passed to each component, with `config`.
  """
  if len(completions) != len(examples):
    raise ValueError(f"host_values: {len(completions)} completions but {len(examples)} examples")
  names = python_names(reward_config)
  values = np.zeros([len(completions), len(names)], np.float32)
  if len(completions):
    for j, name in enumerate(names):
      values[:, j] = call(name, completions, examples, config=reward_config, **kw)
  return names, values


local_rows = distributed.local_rows  # (global row indices, this process's rows)


def rollout_values(reward_config: ml_collections.ConfigDict, tokens: jax.Array,
                   lengths: jax.Array, prompt_index: jax.Array,
                   examples: Sequence[Mapping[str, Any]], tokenizer, **kw) -> np.ndarray:
  """f32[L, C]: the Python components on the rollout rows this process holds (the trainer's
  call; `L` rows in increasing order, as `local_rows`).

  tokens int32[N, M], lengths int32[N] (what the reward scores: before `<|im_end|>`),
  prompt_index int32[N]: sharded over rows. `examples` are this process's prompts, in order:
  the rows it holds belong to them (row r's example is examples[prompt_index[r] - the
  smallest prompt_index it holds]).
  """
  _, ids = local_rows(tokens)
  _, n = local_rows(lengths)
  _, prompt = local_rows(prompt_index)
  if not python_names(reward_config):
    return np.zeros([len(ids), 0], np.float32)
  texts = tokenizer.decode_batch([row[:k] for row, k in zip(ids, n)])
  first = int(prompt.min()) if len(prompt) else 0
  if len(prompt) and int(prompt.max()) - first >= len(examples):
    raise ValueError(f"rollout_values: rows of prompts {first}..{int(prompt.max())} but "
                     f"{len(examples)} examples on this process")
  rows = [examples[int(i) - first] for i in prompt]
  return host_values(reward_config, texts, rows, tokenizer=tokenizer, **kw)[1]
