"""Sampling: prefill + KV-cache while-loop decode with per-sequence think budgets.

  decoding.py   temperature / top-p / top-k / greedy with traced per-row controls
  budgets.py    the think-budget state machine on token ids (forced and prompted modes)
  batching.py   left padding to prompt-length buckets, feature-frame trimming
  loop.py       the jitted bodies: prefill (G samples share it) and the decode loop
  samples.py    `Samples`, what a call returns (tokens, log-probs, loss mask, lengths, ...)
  sampler.py    `Sampler` (compiled, sharded; used by the trainer) and `sample` (notebooks)
"""

from cesar_jax.sampling.budgets import NO_BUDGET, TagIds
from cesar_jax.sampling.decoding import SamplingParams
from cesar_jax.sampling.sampler import Sampler, SamplerConfig, sample
from cesar_jax.sampling.samples import FINISH_LENGTH, FINISH_STOP, Samples

__all__ = ["FINISH_LENGTH", "FINISH_STOP", "NO_BUDGET", "Sampler", "SamplerConfig", "Samples",
           "SamplingParams", "TagIds", "sample"]
