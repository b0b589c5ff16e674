"""The sampler: compiled prefill + decode over a mesh, and the `sample` notebook API.

  cfg = SamplerConfig.from_tokenizer(tok, max_new_tokens=256, budget_mode="forced")
  out = sample(model, {"input_ids": ids_lists, "input_features": feats,
                       "feature_attention_mask": fmask},
               num_samples=8, budgets=[0, 25, 50], config=cfg, key=jax.random.key(0))
  out.tokens, out.lengths, out.think_lengths, out.logprobs, out.loss_mask, out.finish_reasons

The trainer keeps one `Sampler` and calls `generate(params, batch, ...)` every step with the
current params; it returns `Samples` of sharded device arrays.

Compilation. The prefill compiles once per (prompt bucket, frame bucket, batch size, G) and
the decode once per (prompt bucket, N = B*G); budgets, temperature, top-p, top-k, stop ids,
max new tokens (<= `config.max_new_tokens`) and the key are traced. `Sampler.compile_count`
reports the number of compiled executables (tests assert it stays put).

Sharding. Prompts, the cache and every per-row array shard their batch dim over
('data', 'fsdp'); cache kv heads shard over 'tensor'; parameters keep the shardings of the arrays
passed in (place them with `parallel.mesh.shard_model`). The decode donates the cache.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cesar_jax.parallel import mesh as mesh_lib
from cesar_jax.sampling import batching
from cesar_jax.sampling import budgets as budgets_lib
from cesar_jax.sampling import decoding
from cesar_jax.sampling import loop
from cesar_jax.sampling.samples import Samples

BUDGET_MODES = ("forced", "prompted")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Static sampler settings plus per-call defaults (the latter are traced, never recompile).

  Attributes:
    max_new_tokens: capacity of the completion buffer and the cache's decode part (static);
      a call may ask for fewer. 256 = R1-AQA's max_completion_length (shared/REFERENCES.md).
    prompt_buckets: prompt lengths compiled for; a batch pads to the smallest that fits.
    frame_buckets: feature-frame widths the audio is cut down to (exactly, see
      `batching.trim_frames`); None keeps the features as given.
    budget_mode: "forced" (the sampler closes `<think>` at the budget, see budgets.py) or
      "prompted" (the budget is only in the prompt text; the sampler never intervenes).
    temperature / top_p / top_k: default decoding controls (0 = greedy; 1.0 / 0 = off).
    stop_ids: ids that end a completion (defaults to the tokenizer's `<|im_end|>`).
    max_stop_ids: static number of stop-id slots (more ids than this is an error).
    pad_id: written after a completion ends.
    tags: the reasoning tags' ids.
    cache_dtype: KV-cache dtype name; None = the model's compute dtype.
  """
  tags: budgets_lib.TagIds
  pad_id: int
  stop_ids: tuple[int, ...]
  max_new_tokens: int = 256
  prompt_buckets: tuple[int, ...] = batching.DEFAULT_PROMPT_BUCKETS
  frame_buckets: tuple[int, ...] | None = batching.DEFAULT_FRAME_BUCKETS
  budget_mode: str = "forced"
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  max_stop_ids: int = 4
  cache_dtype: str | None = None

  def __post_init__(self):
    if self.budget_mode not in BUDGET_MODES:
      raise ValueError(f"SamplerConfig.budget_mode={self.budget_mode!r}; choose from {BUDGET_MODES}")
    if self.max_new_tokens < 1:
      raise ValueError(f"SamplerConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if not 1 <= len(self.stop_ids) <= self.max_stop_ids:
      raise ValueError(f"SamplerConfig.stop_ids={self.stop_ids}: need 1..{self.max_stop_ids} ids")

  @classmethod
  def from_tokenizer(cls, tokenizer, **kwargs: Any) -> "SamplerConfig":
    """Tag, pad and stop ids from a `cesar_jax.tokenizers.Tokenizer`; kwargs override fields."""
    kwargs.setdefault("stop_ids", (tokenizer.eos_id,))
    kwargs["stop_ids"] = tuple(int(i) for i in kwargs["stop_ids"])
    for name in ("prompt_buckets", "frame_buckets"):
      if kwargs.get(name) is not None:
        kwargs[name] = tuple(int(b) for b in kwargs[name])
    return cls(tags=budgets_lib.TagIds.from_tokenizer(tokenizer), pad_id=tokenizer.pad_id, **kwargs)

  @classmethod
  def from_config_dict(cls, section: Mapping[str, Any], tokenizer) -> "SamplerConfig":
    """From an ml_collections `config.sampler` section (field names; unknown keys are errors)."""
    names = {f.name for f in dataclasses.fields(cls)} - {"tags", "pad_id"}
    items = dict(section.items())
    unknown = sorted(set(items) - names)
    if unknown:
      raise ValueError(f"config.sampler: unknown keys {unknown}; known: {sorted(names)}")
    return cls.from_tokenizer(tokenizer, **items)


class Sampler:
  """Compiled prefill and decode for one model graph, one `SamplerConfig` and one mesh."""

  def __init__(self, graphdef: nnx.GraphDef, config: SamplerConfig, mesh: Mesh | None = None):
    self.graphdef = graphdef
    self.config = config
    self.mesh = mesh
    self._prefill_fns: dict[Any, Any] = {}
    self._decode_fns: dict[Any, Any] = {}

  @classmethod
  def for_model(cls, model: nnx.Module, config: SamplerConfig,
                mesh: Mesh | None = None) -> "Sampler":
    return cls(nnx.graphdef(model), config, mesh)

  # Shardings (None without a mesh: single device / committed inputs decide).

  def _replicated(self) -> NamedSharding | None:
    return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())

  def _batch_shardings(self, tree: Any) -> Any:
    """Every leaf sharded on its leading (batch) dim; scalars replicated."""
    if self.mesh is None:
      return None
    return jax.tree.map(lambda x: self._replicated() if not x.shape
                        else mesh_lib.batch_sharding(self.mesh, x.shape), tree)

  def _controls_shardings(self, controls: loop.Controls) -> Any:
    if self.mesh is None:
      return None
    rep = self._replicated()
    return controls.replace(budgets=self._batch_shardings(controls.budgets),
                            sampling=self._batch_shardings(controls.sampling),
                            stop_ids=rep, max_new_tokens=rep, key=rep)

  def _cache_shardings(self, abstract_cache: Any) -> Any:
    return None if self.mesh is None else mesh_lib.cache_shardings(abstract_cache, self.mesh)

  def _prefill_fn(self, params, batch: batching.PromptBatch, num_samples: int):
    key = (num_samples, jax.tree.map(np.shape, batch))
    if key not in self._prefill_fns:
      fn = functools.partial(loop.prefill, self.graphdef, num_samples=num_samples,
                             max_new_tokens=self.config.max_new_tokens,
                             cache_dtype=self.config.cache_dtype)
      logits, cache = jax.eval_shape(fn, params, batch)
      self._prefill_fns[key] = jax.jit(
          fn, in_shardings=(None, self._batch_shardings(batch)),
          out_shardings=(self._batch_shardings(logits), self._cache_shardings(cache)))
    return self._prefill_fns[key]

  def _decode_fn(self, logits, cache, controls, num_samples: int):
    key = (num_samples, logits.shape, cache.max_length)
    if key not in self._decode_fns:
      rows = self._batch_shardings
      cache_sh = self._cache_shardings(cache)
      fn = functools.partial(loop.decode, self.graphdef, tags=self.config.tags,
                             pad_id=self.config.pad_id, capacity=self.config.max_new_tokens,
                             num_samples=num_samples)
      n, m = logits.shape[0], self.config.max_new_tokens
      per_token = jax.ShapeDtypeStruct((n, m), jnp.int32)
      per_row = jax.ShapeDtypeStruct((n,), jnp.int32)
      out_rows = Samples(tokens=per_token, logprobs=per_token, forced=per_token,
                         loss_mask=per_token, lengths=per_row, think_lengths=per_row,
                         budget_forced=per_row, finish_reason=per_row, budgets=per_row,
                         prompt_index=per_row)
      self._decode_fns[key] = jax.jit(
          fn, in_shardings=(None, rows(logits), cache_sh, self._controls_shardings(controls)),
          out_shardings=(rows(out_rows), cache_sh), donate_argnums=(2,))
    return self._decode_fns[key]

  @property
  def compile_count(self) -> int:
    """Compiled executables across all prefill/decode variants (jit cache sizes)."""
    fns = list(self._prefill_fns.values()) + list(self._decode_fns.values())
    return sum(f._cache_size() for f in fns)  # pylint: disable=protected-access

  # Calls.

  def controls(self, num_rows: int, *, budgets=None, key=None, temperature=None, top_p=None,
               top_k=None, greedy: bool = False, stop_ids: Sequence[int] | None = None,
               max_new_tokens: int | None = None) -> loop.Controls:
    """Host-side `Controls` for N rows; None takes the config's default."""
    cfg = self.config
    budgets = _row_budgets(budgets, num_rows, cfg.budget_mode)
    stop_ids = tuple(cfg.stop_ids if stop_ids is None else stop_ids)
    if not 1 <= len(stop_ids) <= cfg.max_stop_ids:
      raise ValueError(f"stop_ids={stop_ids}: need 1..{cfg.max_stop_ids} ids (max_stop_ids)")
    max_new = cfg.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    if not 1 <= max_new <= cfg.max_new_tokens:
      raise ValueError(f"max_new_tokens={max_new} must be in [1, {cfg.max_new_tokens}] "
                       "(SamplerConfig.max_new_tokens is the compiled capacity)")
    sampling = decoding.SamplingParams.create(
        num_rows, greedy=greedy,
        temperature=cfg.temperature if temperature is None else temperature,
        top_p=cfg.top_p if top_p is None else top_p,
        top_k=cfg.top_k if top_k is None else top_k)
    return loop.Controls(
        budgets=budgets, sampling=sampling,
        stop_ids=np.array(list(stop_ids) + [-1] * (cfg.max_stop_ids - len(stop_ids)), np.int32),
        max_new_tokens=np.asarray(max_new, np.int32),
        key=_key_data(jax.random.key(0) if key is None else key))

  def _place(self, tree: Any, shardings: Any) -> Any:
    """Host arrays -> global arrays on the mesh; every process holds the full host tree and
    materialises only its own shards (multi-host safe). Without a mesh: unchanged."""
    if self.mesh is None:
      return tree
    return jax.tree.map(lambda x, s: mesh_lib.put_sharded(np.asarray(x), s), tree, shardings)

  def generate(self, params: nnx.State, prompts: Mapping[str, Any] | batching.PromptBatch, *,
               num_samples: int = 1, **control_kwargs: Any) -> Samples:
    """Prompts -> `Samples` (device arrays, rows prompt-major). Keyword arguments as `controls`;
    a budget list of length B (one per prompt) is repeated over the G samples."""
    cfg = self.config
    batch = batching.make_batch(prompts, buckets=cfg.prompt_buckets, pad_id=cfg.pad_id,
                                frame_buckets=cfg.frame_buckets)
    n = batch.batch_size * num_samples
    budgets = control_kwargs.pop("budgets", None)
    if budgets is not None and np.ndim(budgets) == 1 and len(budgets) == batch.batch_size:
      budgets = np.repeat(np.asarray(budgets), num_samples)
    controls = self.controls(n, budgets=budgets, **control_kwargs)
    batch = self._place(batch, self._batch_shardings(batch))
    controls = self._place(controls, self._controls_shardings(controls))
    logits, cache = self._prefill_fn(params, batch, num_samples)(params, batch)
    samples, _ = self._decode_fn(logits, cache, controls, num_samples)(params, logits, cache,
                                                                      controls)
    return samples


  def lower(self, params: nnx.State, batch: batching.PromptBatch, controls: loop.Controls, *,
            num_samples: int) -> tuple[jax.stages.Lowered, jax.stages.Lowered]:
    """(prefill, decode) lowered for these arguments, not run; abstract ones (ShapeDtypeStructs,
    params carrying their shardings) are enough (cesar_jax.compile_check)."""
    prefill = self._prefill_fn(params, batch, num_samples)
    logits, cache = jax.eval_shape(prefill, params, batch)
    decode = self._decode_fn(logits, cache, controls, num_samples)
    return (prefill.lower(params, batch), decode.lower(params, logits, cache, controls))


def _key_data(key: jax.Array) -> np.ndarray:
  """uint32 key data of a typed key (`jax.random.key`) or a raw one (`jax.random.PRNGKey`)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.asarray(key, np.uint32)


def _row_budgets(budgets, num_rows: int, mode: str) -> np.ndarray:
  """int32[N] budgets the loop enforces: -1 everywhere in prompted mode or when None."""
  if budgets is None or mode == "prompted":
    return np.full((num_rows,), budgets_lib.NO_BUDGET, np.int32)
  arr = np.asarray(budgets, np.int64)
  if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != num_rows):
    raise ValueError(f"budgets: expected a scalar, one per prompt or one per sequence "
                     f"({num_rows}), got shape {arr.shape}")
  return np.broadcast_to(arr, (num_rows,)).astype(np.int32).copy()


@functools.lru_cache(maxsize=16)
def _cached_sampler(graphdef: nnx.GraphDef, config: SamplerConfig, mesh: Mesh | None) -> Sampler:
  return Sampler(graphdef, config, mesh)


def sample(model: nnx.Module, prompts: Mapping[str, Any] | batching.PromptBatch, *,
           num_samples: int = 1, budgets=None, config: SamplerConfig, key: jax.Array | None = None,
           mesh: Mesh | None = None, **control_kwargs: Any) -> Samples:
  """Notebook API: samples `num_samples` completions per prompt; returns numpy `Samples`.

  Args:
    model: an `AudioLM` (its params are used as they are placed).
    prompts: `input_ids` (token-id lists, or padded int[B, T] plus `attention_mask`),
      `input_features` f32[B, n_mels, F], `feature_attention_mask` int[B, F].
    num_samples: G completions per prompt (rows b*G .. b*G+G-1).
    budgets: think budgets in tokens: None (no limit), one int, one per prompt [B], or one per
      row [B*G]. Enforced only in `config.budget_mode == "forced"`.
    config: the `SamplerConfig` (see `SamplerConfig.from_tokenizer`).
    key: a jax.random key (default key(0)).
    mesh: shard over this mesh (None: default device placement).
    **control_kwargs: temperature, top_p, top_k, greedy, stop_ids, max_new_tokens.
  """
  graphdef, params = nnx.split(model)
  sampler = _cached_sampler(graphdef, config, mesh)
  out = sampler.generate(params, prompts, num_samples=num_samples, budgets=budgets, key=key,
                         **control_kwargs)
  return out.to_numpy()
