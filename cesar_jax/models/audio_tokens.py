"""Audio tokens per clip, per architecture: how many `<|AUDIO|>` placeholders L valid frames need.

Plain integer arithmetic that works on Python ints, numpy and jax arrays alike, and imports
nothing heavy, so grain worker processes can use it without importing the model (pass
`for_arch(cfg.arch)`, a module-level function, picklable).

  qwen2_audio:   conv stem (stride 2) keeps (L - 1) // 2 + 1 positions, pooling (2, stride 2)
                 leaves (n - 2) // 2 + 1 (transformers `Qwen2AudioEncoder._get_feat_extract_output_lengths`).
  qwen2_5_omni:  ((L - 1) // 2 + 1 - 2) // 2 + 1 (transformers `Qwen2_5OmniAudioEncoder.
                 _get_feat_extract_output_lengths`): per 2 * n_window chunk the conv stem keeps
                 (c - 1) // 2 + 1 positions, which sum to (L - 1) // 2 + 1 over a clip's chunks
                 because full chunks are even; pooling then runs over the whole clip.

The two formulas agree; they stay two functions because they are two architectures' rules.
"""

from __future__ import annotations

from typing import Callable


def qwen2_audio(feature_lengths):
  """Qwen2-Audio: tokens for L valid frames."""
  return ((feature_lengths - 1) // 2 + 1 - 2) // 2 + 1


def qwen2_5_omni(feature_lengths):
  """Qwen2.5-Omni thinker: tokens for L valid frames."""
  return ((feature_lengths - 1) // 2 + 1 - 2) // 2 + 1


_BY_ARCH: dict[str, Callable] = {"qwen2_audio": qwen2_audio, "qwen2_5_omni": qwen2_5_omni}


def for_arch(arch: str) -> Callable:
  """The token-count function of an architecture (`AudioLMConfig.arch`)."""
  if arch not in _BY_ARCH:
    raise ValueError(f"no audio token rule for arch={arch!r}; known: {sorted(_BY_ARCH)}")
  return _BY_ARCH[arch]
