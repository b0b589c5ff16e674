"""The budget sweep on the tiny Qwen2.5-Omni thinker (preset tiny_omni), with the Omni template."""

import numpy as np
from flax import nnx

from cesar_jax import tokenizers
from cesar_jax.data import synthetic
from cesar_jax.eval import scoring, sweep
from cesar_jax.models import audio_lm
from cesar_jax.models import config as model_config
from cesar_jax.sampling import sampler as sampler_lib

CLIP = 2.0  # 200 frames: two chunks of 2 * 50


def test_sweep_rows_on_the_tiny_omni_thinker():
  tok = tokenizers.Tokenizer.builtin(chat_format="qwen2_5_omni")
  cfg = model_config.preset("tiny_omni", vocab_size=tok.vocab_size, audio_token_id=tok.audio_id,
                            encoder_layers=1)
  model = audio_lm.AudioLM(cfg, rngs=nnx.Rngs(3))
  items = list(synthetic.generate("test", 3, 0, question_types=synthetic.DEMO_QUESTION_TYPES,
                                  clip_seconds=CLIP, trace_times=False))
  sampler_cfg = sampler_lib.SamplerConfig.from_tokenizer(
      tok, max_new_tokens=10, budget_mode="forced",
      prompt_buckets=(320,))  # the Omni system prompt is long
  scfg = sweep.SweepConfig(budgets=(0, 3), protocols=("cap",), num_samples=2, items_per_call=3,
                           greedy=True, chunk_seconds=CLIP)
  out = sweep.run_sweep(model, tok, items, sampler_cfg, scfg)
  r = out.results
  assert len(r.item) == 3 * 2 * 2 == len(out.completions)
  np.testing.assert_array_equal(r.budget, np.tile(np.repeat([0, 3], 2), 3))
  assert np.all(r.think_tokens <= r.budget)
  # Greedy: the samples of one (item, budget) agree (row bookkeeping: tests/eval/test_sweep.py).
  assert out.completions[0::2] == out.completions[1::2]
  expected = [scoring.score(scoring.extract_answer(c), items[i]["answer"], items[i]["choices"])
              for c, i in zip(out.completions, r.item)]
  np.testing.assert_array_equal(r.correct, expected)
