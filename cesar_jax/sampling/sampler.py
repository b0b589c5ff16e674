"""The sampler: compiled prefill + decode over a mesh, and the `sample` notebook API.

  cfg = SamplerConfig.from_tokenizer(tok, max_new_tokens=256, budget_mode="forced",
                                     continuation=" Wait")  # extend mode's (s1)
  out = sample(model, {"input_ids": ids_lists, "input_features": feats,
                       "feature_attention_mask": fmask},
               num_samples=8, budgets=[0, 25, 50], config=cfg, key=jax.random.key(0))
  out.tokens, out.lengths, out.think_lengths, out.logprobs, out.loss_mask, out.finish_reasons

The trainer keeps one `Sampler` and calls `generate(params, batch, ...)` every step with the
current params; it returns `Samples` of sharded device arrays.

Compilation. The prefill compiles once per (prompt bucket, frame bucket, batch size, G) and
the decode once per (prompt bucket, N = B*G); budgets, budget modes (per row), the extend
continuation, temperature, top-p, top-k, stop ids,
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

# forced: the cap (CESAR's L_max; reports call it "cap"); prompted: the budget is only in the
# prompt; extend: the cap plus s1's budget forcing (early `</think>` -> continuation).
BUDGET_MODES = ("forced", "prompted", "extend")
DEFAULT_CONTINUATION = " Wait"  # s1 (arXiv 2501.19393) appends "Wait".


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Static sampler settings plus per-call defaults (the latter are traced, never recompile).

  Attributes:
    max_new_tokens: capacity of the completion buffer and the cache's decode part (static);
      a call may ask for fewer. 256 = R1-AQA's max_completion_length (shared/REFERENCES.md).
    prompt_buckets: prompt lengths compiled for; a batch pads to the smallest that fits.
    frame_buckets: feature-frame widths the audio is cut down to (exactly, see
      `batching.trim_frames`); None keeps the features as given.
    budget_mode: the default mode of every row: "forced" (the cap: the sampler closes
      `<think>` at the budget, see budgets.py), "extend" (the cap, and an early `</think>` is
      replaced by the continuation until the budget) or "prompted" (the budget is only in
      the prompt text; the sampler never intervenes). A call may give per-row modes.
    continuation_ids: extend mode's continuation (`from_tokenizer(continuation=TEXT)`
      encodes it; default " Wait", s1's). Traced: changing it never recompiles.
    max_continuation_ids: static number of continuation slots (a longer one is an error).
    temperature / top_p / top_k: default decoding controls (0 = greedy; 1.0 / 0 = off).
    stop_ids: ids that end a completion (defaults to the tokenizer's `<|im_end|>`).
    max_stop_ids: static number of stop-id slots (more ids than this is an error).
    pad_id: written after a completion ends.
    tags: the reasoning tags' ids.
    cache_dtype: KV-cache dtype name; None = the model's compute dtype.
    prefill_batch: prompts per prefill pass (0 = all at once): fewer bound the prefill's
      activations (audio encoder and prompt forward) at the cost of sequential passes.
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
  continuation_ids: tuple[int, ...] = ()
  max_continuation_ids: int = 8
  prefill_batch: int = 0

  def __post_init__(self):
    if self.budget_mode not in BUDGET_MODES:
      raise ValueError(f"SamplerConfig.budget_mode={self.budget_mode!r}; choose from {BUDGET_MODES}")
    if self.prefill_batch < 0:
      raise ValueError(f"SamplerConfig.prefill_batch must be >= 0 (0 = all), got {self.prefill_batch}")
    if self.max_new_tokens < 1:
      raise ValueError(f"SamplerConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if not 1 <= len(self.stop_ids) <= self.max_stop_ids:
      raise ValueError(f"SamplerConfig.stop_ids={self.stop_ids}: need 1..{self.max_stop_ids} ids")
    _check_continuation(self.continuation_ids, self.max_continuation_ids, self.tags,
                        "SamplerConfig.continuation_ids")
    if self.budget_mode == "extend" and not self.continuation_ids:
      raise ValueError("SamplerConfig.budget_mode='extend' needs continuation_ids (the ids of "
                       "e.g. ' Wait'; `from_tokenizer` encodes `continuation`)")

  @classmethod
  def from_tokenizer(cls, tokenizer, **kwargs: Any) -> "SamplerConfig":
    """Tag, pad and stop ids from a `cesar_jax.tokenizers.Tokenizer`; kwargs override fields.

    `continuation` (text, default `DEFAULT_CONTINUATION`) is encoded into `continuation_ids`
    unless those are given.
    """
    continuation = kwargs.pop("continuation", None)
    if "continuation_ids" not in kwargs:
      kwargs["continuation_ids"] = tuple(tokenizer.encode(
          DEFAULT_CONTINUATION if continuation is None else continuation))
    kwargs["continuation_ids"] = tuple(int(i) for i in kwargs["continuation_ids"])
    kwargs.setdefault("stop_ids", (tokenizer.eos_id,))
    kwargs["stop_ids"] = tuple(int(i) for i in kwargs["stop_ids"])
    for name in ("prompt_buckets", "frame_buckets"):
      if kwargs.get(name) is not None:
        kwargs[name] = tuple(int(b) for b in kwargs[name])
    return cls(tags=budgets_lib.TagIds.from_tokenizer(tokenizer), pad_id=tokenizer.pad_id, **kwargs)

  @classmethod
  def from_config_dict(cls, section: Mapping[str, Any], tokenizer) -> "SamplerConfig":
    """From an ml_collections `config.sampler` section (field names; unknown keys are errors)."""
    names = ({f.name for f in dataclasses.fields(cls)} - {"tags", "pad_id"}) | {"continuation"}
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
                            modes=self._batch_shardings(controls.modes), continuation=rep,
                            sampling=self._batch_shardings(controls.sampling),
                            stop_ids=rep, max_new_tokens=rep, key=rep)

  def _cache_shardings(self, abstract_cache: Any) -> Any:
    return None if self.mesh is None else mesh_lib.cache_shardings(abstract_cache, self.mesh)

  def _prefill_fn(self, params, batch: batching.PromptBatch, num_samples: int):
    key = (num_samples, jax.tree.map(np.shape, batch))
    if key not in self._prefill_fns:
      fn = functools.partial(loop.prefill, self.graphdef, num_samples=num_samples,
                             max_new_tokens=self.config.max_new_tokens,
                             cache_dtype=self.config.cache_dtype,
                             prompts_per_pass=self.config.prefill_batch)
      logits, cache = jax.eval_shape(fn, params, batch)
      self._prefill_fns[key] = jax.jit(
          fn, in_shardings=(None, self._batch_shardings(batch)),
          out_shardings=(self._batch_shardings(logits), self._cache_shardings(cache)))
    return self._prefill_fns[key]

  def _decode_fn(self, logits, cache, controls, num_samples: int):
    key = (num_samples, logits.shape, jax.tree.map(np.shape, cache))
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
               max_new_tokens: int | None = None, modes=None,
               continuation_ids: Sequence[int] | None = None) -> loop.Controls:
    """Host-side `Controls` for N rows; None takes the config's default.

    `modes`: one budget mode ("forced"/"cap" or "extend", or `budgets.MODE_*` ids) for all
    rows or one per row [N]; None: the config's `budget_mode`. `continuation_ids`: extend's
    continuation for this call (default the config's).
    """
    cfg = self.config
    budgets = _row_budgets(budgets, num_rows, cfg.budget_mode)
    modes = _row_modes(modes, num_rows, cfg.budget_mode)
    continuation = tuple(cfg.continuation_ids if continuation_ids is None else continuation_ids)
    _check_continuation(continuation, cfg.max_continuation_ids, cfg.tags, "continuation_ids")
    if not continuation and np.any((modes == budgets_lib.MODE_EXTEND) & (budgets >= 0)):
      raise ValueError("extend-mode rows need continuation ids (SamplerConfig.continuation_ids)")
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
        budgets=budgets, modes=modes,
        continuation=np.array(list(continuation) + [-1] * (cfg.max_continuation_ids
                                                          - len(continuation)), np.int32),
        sampling=sampling,
        stop_ids=np.array(list(stop_ids) + [-1] * (cfg.max_stop_ids - len(stop_ids)), np.int32),
        max_new_tokens=np.asarray(max_new, np.int32),
        key=_key_data(jax.random.key(0) if key is None else key))

  def _place(self, tree: Any, per_row: bool) -> Any:
    """Host arrays -> global arrays on the mesh (`mesh.host_to_global`). `per_row` leaves hold
    THIS process's rows (its prompts, their budgets and sampling controls): the global batch
    stacks every process's rows in process order. Other leaves are the same on every host.
    Without a mesh: unchanged (one process)."""
    if self.mesh is None:
      return tree
    if per_row:
      return mesh_lib.host_batch_to_global(tree, self.mesh)
    return mesh_lib.host_to_global(tree, jax.tree.map(lambda _: self._replicated(), tree))

  def _place_controls(self, controls: loop.Controls) -> loop.Controls:
    return controls.replace(
        budgets=self._place(controls.budgets, True), modes=self._place(controls.modes, True),
        sampling=self._place(controls.sampling, True),
        continuation=self._place(controls.continuation, False),
        stop_ids=self._place(controls.stop_ids, False),
        max_new_tokens=self._place(controls.max_new_tokens, False),
        key=self._place(controls.key, False))

  def generate(self, params: nnx.State, prompts: Mapping[str, Any] | batching.PromptBatch, *,
               num_samples: int = 1, **control_kwargs: Any) -> Samples:
    """Prompts -> `Samples` (global device arrays, rows prompt-major). Keyword arguments as
    `controls`; a budget list of length B (one per prompt) is repeated over the G samples.

    On several processes each passes its own B_p prompts (and their budgets); the samples are
    one global batch of sum_p B_p * G rows, process 0's first (`distributed.host_rows` gives
    a process its own rows back)."""
    cfg = self.config
    batch = batching.make_batch(prompts, buckets=cfg.prompt_buckets, pad_id=cfg.pad_id,
                                frame_buckets=cfg.frame_buckets)
    n = batch.batch_size * num_samples
    budgets = control_kwargs.pop("budgets", None)
    if budgets is not None and np.ndim(budgets) == 1 and len(budgets) == batch.batch_size:
      budgets = np.repeat(np.asarray(budgets), num_samples)
    controls = self.controls(n, budgets=budgets, **control_kwargs)
    batch = self._place(batch, True)
    controls = self._place_controls(controls)
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


def _row_modes(modes, num_rows: int, default: str) -> np.ndarray:
  """int32[N] per-row budget modes (`budgets.MODE_*`) from names or ids, scalar or per row."""
  if modes is None:  # prompted rows have no enforced budget: their mode never matters.
    modes = "forced" if default == "prompted" else default
  arr = np.asarray(modes)
  if arr.dtype.kind in "UO":
    unknown = sorted({str(m) for m in arr.reshape(-1)} - set(budgets_lib.MODE_IDS))
    if unknown:
      raise ValueError(f"budget modes {unknown}: choose from {sorted(budgets_lib.MODE_IDS)}")
    arr = np.vectorize(budgets_lib.MODE_IDS.get, otypes=[np.int32])(arr) if arr.ndim else \
        np.asarray(budgets_lib.MODE_IDS[str(arr)], np.int32)
  elif not np.all(np.isin(arr, (budgets_lib.MODE_CAP, budgets_lib.MODE_EXTEND))):
    raise ValueError(f"budget mode ids must be {budgets_lib.MODE_CAP} (cap) or "
                     f"{budgets_lib.MODE_EXTEND} (extend), got {np.unique(arr).tolist()}")
  if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != num_rows):
    raise ValueError(f"modes: expected a scalar or one per sequence ({num_rows}), got shape "
                     f"{arr.shape}")
  return np.broadcast_to(arr.astype(np.int32), (num_rows,)).copy()


def _check_continuation(ids: Sequence[int], max_ids: int, tags: budgets_lib.TagIds,
                        where: str) -> None:
  if len(ids) > max_ids:
    raise ValueError(f"{where}={tuple(ids)}: {len(ids)} ids, more than max_continuation_ids="
                     f"{max_ids} (a static slot count)")
  bad = [i for i in ids if i < 0 or i in (tags.think_open, tags.think_close, tags.answer_open)]
  if bad:
    raise ValueError(f"{where}={tuple(ids)}: ids {bad} are negative or reasoning tags")


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
      row [B*G]. Enforced unless `config.budget_mode == "prompted"`.
    config: the `SamplerConfig` (see `SamplerConfig.from_tokenizer`).
    key: a jax.random key (default key(0)).
    mesh: shard over this mesh (None: default device placement).
    **control_kwargs: temperature, top_p, top_k, greedy, stop_ids, max_new_tokens, modes
      (scalar or per row [B*G]), continuation_ids.
  """
  graphdef, params = nnx.split(model)
  sampler = _cached_sampler(graphdef, config, mesh)
  control_kwargs["budgets"] = budgets
  prompts, control_kwargs, real = _pad_to_mesh(prompts, num_samples, control_kwargs, mesh)
  out = sampler.generate(params, prompts, num_samples=num_samples, key=key, **control_kwargs)
  out = out.to_numpy()
  if real is None:
    return out
  return jax.tree.map(lambda x: x[:real * num_samples], out)


def _pad_to_mesh(prompts, num_samples: int, controls: dict[str, Any], mesh: Mesh | None):
  """The notebook API's batches pad up to what the mesh splits (the training jobs' batches
  must divide instead: `mesh.check_batch`): this process's B prompts grow to a multiple of
  its share of the batch shards by repeating the last one, and so do per-prompt [B] and per-row
  [B * G] controls. Returns (prompts, controls, B or None when nothing was padded)."""
  if mesh is None or isinstance(prompts, batching.PromptBatch):
    return prompts, controls, None
  share = max(1, mesh_lib.batch_shards(mesh) // jax.process_count())
  ids = prompts["input_ids"]
  b = len(ids) if isinstance(ids, (list, tuple)) else np.shape(ids)[0]
  extra = (-b) % share
  if not extra:
    return prompts, controls, None

  def grow(x, rows):
    if isinstance(x, (list, tuple)):
      return list(x) + [x[-1]] * rows
    x = np.asarray(jax.device_get(x))
    return np.concatenate([x, np.repeat(x[-1:], rows, axis=0)], axis=0)

  prompts = {k: (grow(v, extra) if v is not None else None) for k, v in prompts.items()}
  out = {}
  for k, v in controls.items():
    if v is not None and not isinstance(v, (str, bytes)) and np.ndim(v) == 1 and \
        len(v) in (b, b * num_samples):
      v = grow(np.asarray(v), extra if len(v) == b else extra * num_samples)
    out[k] = v
  return prompts, out, b
