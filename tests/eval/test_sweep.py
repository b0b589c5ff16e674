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
  assert "decay" not in summary  # only with the sweep's item count
  # With it: the decay slope of the 5 chains with a claim, in points per 100 tokens.
  decay = evaluate.perception_summary(out, num_bins=3, num_items=n, num_resamples=50)["decay"]
  x, y = np.array([5, 5, 15, 25, 25.0]), np.array([1, 1, 0.5, 0, 0])
  assert decay["slope_per_100_tokens"] == pytest.approx(1e4 * np.polyfit(x, y, 1)[0])
  assert decay["num_chains"] == 5
  item, tokens, precision = evaluate.perception_chains(out)
  np.testing.assert_array_equal(item, [0, 1, 2, 4, 5])


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


def test_experiment_summary_pools_and_compares_perception_decay(tmp_path):
  """Arms' chains (kept in memory by evaluate_model) pooled per arm and compared, paired."""
  import ml_collections
  rng = np.random.default_rng(0)
  entries = {}
  for arm, decay in (("a", 0.003), ("b", 0.0)):
    for s in range(2):
      item = np.repeat(np.arange(10), 4)
      results = scaling.SweepResults(item, np.tile([0, 32], 20), np.tile([0, 0, 1, 1], 10),
                                     rng.random(40) < 0.5, np.full(40, 30))
      x = rng.uniform(10, 120, 40)
      y = np.clip(0.95 - decay * x + rng.normal(0, 0.02, 40), 0, 1)
      curve = scaling.scaling_curve(results, num_resamples=20, fixed_budget=32)
      entries[f"{arm}_s{s}"] = {"curve": curve, "protocols": {"cap": curve},
                                "results": {"cap": results}, "perception_chains": (item, x, y)}
  config = ml_collections.ConfigDict({"seed": 0, "eval": {"num_resamples": 200,
                                                          "fixed_budget": 32}})
  summary = evaluate.experiment_summary(entries, {"a": ["a_s0", "a_s1"], "b": ["b_s0", "b_s1"]},
                                        config)
  pooled = summary["seeds"]["a"]["perception"]
  assert pooled["num_chains"] == 80 and pooled["slope_ci"][1] < 0
  c = summary["perception_comparisons"]["b_minus_a"]
  assert c["decay_diff_ci"][0] > 0  # b decays less (truth: +30 points per 100 tokens)
  # An arm with a model without claims is left out of the perception statistics.
  entries["b_s1"]["perception_chains"] = None
  summary = evaluate.experiment_summary(entries, {"a": ["a_s0", "a_s1"], "b": ["b_s0", "b_s1"]},
                                        config)
  assert "perception" not in summary["seeds"]["b"] and summary["perception_comparisons"] == {}
