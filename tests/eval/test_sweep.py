"""The budget sweep: row bookkeeping against direct sampler calls, scoring, perception summary."""

import jax
import numpy as np
import pytest
from flax import nnx

from cesar_jax import tokenizers
from cesar_jax.data import synthetic
from cesar_jax.eval import evaluate, scaling, scoring, sweep
from cesar_jax.models import audio_lm
from cesar_jax.models import config as model_config
from cesar_jax.sampling import sampler as sampler_lib

CLIP = 2.0


@pytest.fixture(scope="module")
def setup():
  tok = tokenizers.Tokenizer.builtin()
  cfg = model_config.preset("tiny", vocab_size=tok.vocab_size, audio_token_id=tok.audio_id,
                            encoder_layers=1, max_source_positions=100)
  model = audio_lm.AudioLM(cfg, rngs=nnx.Rngs(3))
  items = list(synthetic.generate("test", 3, 0, question_types=synthetic.DEMO_QUESTION_TYPES,
                                  clip_seconds=CLIP, trace_times=False))
  return tok, model, items


def _sampler_config(tok, mode="forced"):
  return sampler_lib.SamplerConfig.from_tokenizer(tok, max_new_tokens=12, budget_mode=mode,
                                                  prompt_buckets=(192,))


@pytest.mark.parametrize("mode", ["forced", "prompted", "extend"])
def test_rows_match_direct_greedy_sampling(setup, mode):
  tok, model, items = setup
  cfg = sweep.SweepConfig(budgets=(0, 2, 5), protocols=mode, num_samples=2, items_per_call=2,
                          greedy=True, chunk_seconds=CLIP)
  out = sweep.run_sweep(model, tok, items, _sampler_config(tok, mode), cfg)
  assert out.protocols == [{"forced": "cap"}.get(mode, mode)]
  r = out.results
  assert len(r.item) == len(items) * 3 * 2 == len(out.completions)
  np.testing.assert_array_equal(r.item, np.repeat(np.arange(3), 6))
  np.testing.assert_array_equal(r.budget, np.tile(np.repeat([0, 2, 5], 2), 3))
  np.testing.assert_array_equal(r.sample, np.tile([0, 1], 9))
  # Each row is what the sampler gives for that item and budget alone (greedy: deterministic).
  for row in (0, 3, 5, 8, 16):
    i, b = int(r.item[row]), int(r.budget[row])
    alone = sweep.run_sweep(model, tok, [items[i]], _sampler_config(tok, mode),
                            sweep.SweepConfig(**{**cfg.__dict__, "num_samples": 1}), budgets=[b])
    assert alone.completions[0] == out.completions[row]
    assert alone.results.think_tokens[0] == r.think_tokens[row]
  if mode != "prompted":
    assert np.all(r.think_tokens <= r.budget)
  expected = [scoring.score(scoring.extract_answer(c), items[i]["answer"], items[i]["choices"])
              for c, i in zip(out.completions, r.item)]
  np.testing.assert_array_equal(r.correct, expected)
  valid = [any(scoring.score(scoring.extract_answer(c), ch, items[i]["choices"])
               for ch in items[i]["choices"]) for c, i in zip(out.completions, r.item)]
  np.testing.assert_array_equal(out.names_option, valid)
  assert np.all(out.names_option[r.correct])


def test_both_protocols_and_natural_rows_in_one_sweep_match_separate_sweeps(setup):
  """Cap, extend and unconstrained rows of one sweep (per-row budgets and modes) are the rows
  single-protocol sweeps give (greedy)."""
  tok, model, items = setup
  cfg = sweep.SweepConfig(budgets=(0, 3, 6), protocols=("cap", "extend"), num_samples=1,
                          natural_samples=1, items_per_call=3, greedy=True, chunk_seconds=CLIP)
  config = sampler_lib.SamplerConfig.from_tokenizer(tok, max_new_tokens=12, prompt_buckets=(192,),
                                                    continuation_ids=(tok.encode(" Wait")[0],))
  out = sweep.run_sweep(model, tok, items, config, cfg)
  assert len(out.completions) == 3 * (2 * 3 + 1)
  assert sorted(out.protocols) == ["cap", "extend", "natural"]
  np.testing.assert_array_equal(out.select("natural").budget, [-1] * 3)
  for protocol in ("cap", "extend"):
    alone = sweep.run_sweep(model, tok, items, config, sweep.SweepConfig(
        **{**cfg.__dict__, "protocols": (protocol,), "natural_samples": 0}))
    rows = out.mask(protocol)
    assert [c for c, m in zip(out.completions, rows) if m] == alone.completions
    np.testing.assert_array_equal(out.select(protocol).think_tokens, alone.results.think_tokens)
  with pytest.raises(KeyError, match="prompted"):
    out.mask("prompted")
  with pytest.raises(ValueError, match="protocols"):
    sweep.SweepConfig(protocols=("cap", "sometimes"))
  with pytest.raises(ValueError, match="budget_mode"):
    sweep.run_sweep(model, tok, items, _sampler_config(tok, "prompted"), cfg)


def test_perception_summary_bins_chains_with_claims():
  n = 6
  results = scaling.SweepResults(item=np.arange(n), budget=np.zeros(n, int), sample=np.zeros(n, int),
                                 correct=np.ones(n, bool),
                                 think_tokens=np.array([5, 5, 15, 15, 25, 25]))
  out = sweep.SweepOutput(results, np.array(["cap"] * n), [""] * n,
                          perception_precision=np.array([1, 1, 0.5, np.nan, 0, 0], np.float32),
                          perception_recall=np.array([1, 1, 1, 0, 0, 0], np.float32))
  summary = evaluate.perception_summary(out, num_bins=3)
  assert summary["precision"] == pytest.approx(2.5 / 5)
  assert summary["recall"] == pytest.approx(0.5)
  counts = np.asarray(summary["counts"])
  assert counts.sum() == 5
  means = np.asarray(summary["accuracy"])[counts > 0]
  np.testing.assert_allclose(means, [1.0, 0.5, 0.0])


def test_parse_checkpoints():
  assert evaluate.parse_checkpoints("runs/a") == {"a": "runs/a"}
  assert evaluate.parse_checkpoints("x=runs/a, y=runs/b") == {"x": "runs/a", "y": "runs/b"}
  with pytest.raises(ValueError, match="twice"):
    evaluate.parse_checkpoints("x=a,x=b")
  with pytest.raises(ValueError, match="empty"):
    evaluate.parse_checkpoints("")


def test_chance_accuracy_is_the_mean_uniform_guess():
  items = [{"choices": ["a", "b"]}, {"choices": ["a", "b", "c", "d"]}]
  assert evaluate.chance_accuracy(items) == pytest.approx(37.5)


def test_host_blocks_split_a_call_and_repeat_the_last_item(monkeypatch):
  """What each of several processes samples of a call's items (the rows are gathered after)."""
  from cesar_jax.eval import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  blocks = []
  for p in range(3):
    monkeypatch.setattr(jax, "process_index", lambda p=p: p)
    blocks.append(sweep_lib._host_block(7))  # pylint: disable=protected-access
  assert blocks == [(0, 3, 0), (3, 6, 0), (6, 7, 2)]
  assert sweep_lib._take(list("abcdefg"), 6, 7, 2) == ["g", "g", "g"]  # pylint: disable=protected-access
  np.testing.assert_array_equal(sweep_lib._take(np.arange(14), 12, 14, 4),  # pylint: disable=protected-access
                                [12, 13, 13, 13, 13, 13])
  monkeypatch.setattr(jax, "process_index", lambda: 2)
  with pytest.raises(ValueError, match="2 items per call leave process 2 of 3 nothing"):
    sweep_lib._host_block(2)  # pylint: disable=protected-access
