"""Prompt batches for the sampler: left padding to length buckets (host side, numpy).

Prompts are left-padded so every row's last prompt token sits in the same column and the
first generated token of every row goes into the same cache slot. The padded length is the
smallest bucket that fits the longest prompt of every process (on several hosts each holds its
own rows of the global batch, and they must agree on one shape), so a batch of a new prompt length reuses the
compiled sampler of its bucket instead of compiling a new one.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.struct
import jax
import numpy as np

from cesar_jax.parallel import distributed

# Buckets for Qwen2-Audio prompts (a 30 s clip alone is 750 audio tokens, a 10 s one 250):
# steps of 64 up to 512, 128 up to 1024, 256 up to 2048. Prefill attention costs P^2, so
# fine steps pay for their extra compiles (one per bucket used) on long runs.
DEFAULT_PROMPT_BUCKETS = (32, *range(64, 513, 64), *range(640, 1025, 128), *range(1280, 2049, 256))
# Feature-frame buckets (100 frames per second; Qwen2-Audio's window is 3000 frames = 30 s).
DEFAULT_FRAME_BUCKETS = (256, 512, 1024, 1536, 2048, 3000)
# Frames kept past the longest clip: the conv stem (kernel 3, then kernel 3 stride 2) reads two
# frames beyond a clip's last valid frame, so keeping them makes trimming exact.
_FRAME_MARGIN = 2


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= `length`; an error naming both when none fits."""
  fits = [b for b in sorted(buckets) if b >= length]
  if not fits:
    raise ValueError(f"prompt length {length} exceeds the largest prompt bucket "
                     f"{max(buckets)} (buckets {tuple(sorted(buckets))}); add a bucket")
  return fits[0]


def left_pad(input_ids: np.ndarray, attention_mask: np.ndarray, length: int,
             pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Re-pads rows (padded on either side) to `length` columns, real tokens flush right.

  Args:
    input_ids: int[B, T]; attention_mask: int/bool[B, T], 1 on real tokens.
    length: the new width (>= the longest row).
    pad_id: the id written into padding.

  Returns:
    (int32[B, length], int32[B, length]).
  """
  input_ids = np.asarray(input_ids)
  mask = np.asarray(attention_mask).astype(bool)
  if input_ids.shape != mask.shape or input_ids.ndim != 2:
    raise ValueError(f"input_ids {input_ids.shape} and attention_mask {mask.shape} must be "
                     "the same [B, T] shape")
  lengths = mask.sum(axis=1)
  if lengths.max(initial=0) > length:
    raise ValueError(f"left_pad: a prompt of {lengths.max()} tokens does not fit {length}")
  rows, cols = np.nonzero(mask)
  dest = length - lengths[rows] + (np.cumsum(mask, axis=1) - 1)[rows, cols]
  out_ids = np.full((input_ids.shape[0], length), pad_id, np.int32)
  out_mask = np.zeros((input_ids.shape[0], length), np.int32)
  out_ids[rows, dest] = input_ids[rows, cols]
  out_mask[rows, dest] = 1
  return out_ids, out_mask


@flax.struct.dataclass
class PromptBatch:
  """B prompts, left-padded to a bucket.

  Attributes:
    input_ids: int32[B, P] (audio placeholders already expanded, see Tokenizer.encode_prompt).
    attention_mask: int32[B, P], 1 on real tokens.
    input_features: f32[B, n_mels, F] log-mel features.
    feature_attention_mask: int32[B, F], 1 on real frames.
  """
  input_ids: Any
  attention_mask: Any
  input_features: Any
  feature_attention_mask: Any

  @property
  def batch_size(self) -> int:
    return self.input_ids.shape[0]

  @property
  def prompt_length(self) -> int:
    return self.input_ids.shape[1]

  @property
  def lengths(self) -> np.ndarray:
    return np.asarray(self.attention_mask).sum(axis=1)


def trim_frames(features: np.ndarray, feature_mask: np.ndarray,
                buckets: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
  """Cuts padding frames off the end: to the smallest bucket >= longest clip + 2 frames.

  The audio encoder masks padded positions, and the two frames kept past the longest clip are
  all its conv stem reads beyond a clip, so the audio tokens are unchanged (HF pads every clip
  to the full 30 s window; encoding only what a batch needs is most of the prefill cost of
  short clips). Features never grow: a bucket above F keeps F.
  """
  f = features.shape[2]
  if not buckets:
    return features, feature_mask
  # Every process must trim to the same width (one compiled shape): agree on the longest clip.
  need = distributed.agree_max(int(feature_mask.sum(axis=1).max())) + _FRAME_MARGIN
  fits = [b for b in sorted(buckets) if b >= need]
  width = min(fits[0], f) if fits else f
  width += width % 2  # The encoder needs an even frame count.
  if width >= f:
    return features, feature_mask
  if feature_mask[:, width:].any():
    raise ValueError("trim_frames: feature_attention_mask has real frames after padding")
  return features[:, :, :width], feature_mask[:, :width]


def make_batch(prompts: Mapping[str, Any] | PromptBatch, *, buckets: Sequence[int],
               pad_id: int, frame_buckets: Sequence[int] | None = None) -> PromptBatch:
  """A bucketed `PromptBatch` from token lists or padded arrays.

  `prompts` holds `input_ids` (a list of token-id lists, or int[B, T] with `attention_mask`,
  padded on either side), `input_features` f32[B, n_mels, F] and `feature_attention_mask`
  int[B, F] (all frames real when absent; real frames first, as Whisper's extractor pads).
  With `frame_buckets`, trailing padding frames are cut (see `trim_frames`).
  """
  if isinstance(prompts, PromptBatch):
    prompts = {f: getattr(prompts, f) for f in ("input_ids", "attention_mask", "input_features",
                                                "feature_attention_mask")}
  for key in ("input_ids", "input_features"):
    if key not in prompts:
      raise KeyError(f"prompts: missing {key!r} (have {sorted(prompts)})")
  ids = prompts["input_ids"]
  if isinstance(ids, (list, tuple)) and (not ids or not np.isscalar(ids[0])):
    if not ids:
      raise ValueError("prompts: input_ids is empty")
    width = max(len(r) for r in ids)
    mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in ids], np.int32)
    ids = np.array([[pad_id] * (width - len(r)) + list(r) for r in ids], np.int64)
  else:
    ids = np.asarray(jax.device_get(ids))
    mask = prompts.get("attention_mask")
    mask = np.ones(ids.shape, np.int32) if mask is None else np.asarray(jax.device_get(mask))
  if ids.ndim != 2:
    raise ValueError(f"prompts: input_ids must be [B, T], got shape {ids.shape}")
  if np.any(mask.sum(axis=1) == 0):
    raise ValueError(f"prompts: rows {np.flatnonzero(mask.sum(axis=1) == 0).tolist()} are empty")
  # The bucket of the longest prompt of ALL processes: each host holds only its own rows, and
  # the global batch they form must have one shape.
  length = bucket_length(distributed.agree_max(int(mask.sum(axis=1).max())), buckets)
  ids, mask = left_pad(ids, mask, length, pad_id)
  features = np.asarray(jax.device_get(prompts["input_features"]), np.float32)
  if features.ndim != 3 or features.shape[0] != ids.shape[0]:
    raise ValueError(f"prompts: input_features must be [B={ids.shape[0]}, n_mels, F], "
                     f"got shape {features.shape}")
  fmask = prompts.get("feature_attention_mask")
  fmask = (np.ones((features.shape[0], features.shape[2]), np.int32) if fmask is None
           else np.asarray(jax.device_get(fmask), np.int32))
  if fmask.shape != (features.shape[0], features.shape[2]):
    raise ValueError(f"prompts: feature_attention_mask shape {fmask.shape} does not match "
                     f"input_features {features.shape} (expected [B, F])")
  features, fmask = trim_frames(features, fmask, frame_buckets)
  return PromptBatch(input_ids=ids, attention_mask=mask, input_features=features,
                     feature_attention_mask=fmask)
