"""Tests for cesar_jax.eval.report and plots: report.json values, report.md, the PNG figures."""

import json

import numpy as np
import pytest
from matplotlib import image as mpimg

from cesar_jax.eval import report
from cesar_jax.eval import scaling


def _sweep(p_of_budget, seed, num_items=60, k=3):
  rng = np.random.default_rng(seed)
  budgets = np.array(scaling.CESAR_BUDGETS)
  item, budget, sample = np.meshgrid(np.arange(num_items), budgets, np.arange(k), indexing="ij")
  correct = rng.random(item.shape) < p_of_budget(budget)
  tokens = np.minimum(budget, rng.integers(0, 300, size=item.shape))
  return scaling.SweepResults(item.ravel(), budget.ravel(), sample.ravel(), correct.ravel(), tokens.ravel())


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("report")
  rising = scaling.scaling_curve(_sweep(lambda b: 0.5 + 0.0015 * b, seed=0), num_resamples=300)
  falling = scaling.scaling_curve(_sweep(lambda b: 0.8 - 0.002 * b, seed=1), num_resamples=300)
  metrics = workdir / "metrics.jsonl"
  with open(metrics, "w") as f:
    for step in range(40):
      f.write(json.dumps({"step": step, "reward/accuracy": step / 40, "reward/format": 1.0,
                          "reward/overthinking": 1 - step / 80, "loss": 0.1}) + "\n")
  perception = {"bin_centres": [25.0, 75.0, 125.0], "accuracy": [0.8, 0.6, 0.0],
                "counts": [10, 5, 0], "precision": 0.7, "recall": 0.5}
  rng = np.random.default_rng(2)
  natural = scaling.natural_overthinking(np.repeat(np.arange(50), 4), rng.random(200) < 0.6,
                                         rng.integers(0, 200, 200), num_resamples=100)
  models = {"cesar": {"curve": rising, "perception": perception, "metrics": str(metrics),
                      "natural_overthinking": natural},
            "outcome only": falling}
  out = report.write_report(workdir / "out", models)
  return workdir / "out", out, rising, falling


def test_report_json_fields_and_values(written):
  out_dir, returned, rising, falling = written
  data = json.loads((out_dir / "report.json").read_text())
  assert data == json.loads(json.dumps(returned))
  assert set(data["models"]) == {"cesar", "outcome only"}
  for name, curve in (("cesar", rising), ("outcome only", falling)):
    m = data["models"][name]
    for key in ("budgets", "accuracy", "ci_low", "ci_high", "mean_think_tokens"):
      np.testing.assert_allclose(m[key], getattr(curve, key))
    assert m["budgets"] == list(scaling.CESAR_BUDGETS)
    assert m["slope_per_token"] == pytest.approx(curve.slope_per_token)
    assert m["slope_ci"] == pytest.approx(list(curve.slope_ci))
    assert m["slope_per_log_token"] == pytest.approx(curve.slope_per_log_token)
    assert m["sweet_spot"] == curve.sweet_spot
    assert m["accuracy"][m["budgets"].index(m["sweet_spot"])] == pytest.approx(max(m["accuracy"]))
  # The constructed trends come out with the right sign and the intervals exclude zero.
  assert data["models"]["cesar"]["slope_ci"][0] > 0
  assert data["models"]["outcome only"]["slope_ci"][1] < 0
  p = data["models"]["cesar"]["perception"]
  assert p == {"bin_centers": [25.0, 75.0, 125.0], "accuracy": [0.8, 0.6, 0.0],
               "counts": [10.0, 5.0, 0.0], "precision": 0.7, "recall": 0.5}
  assert "perception" not in data["models"]["outcome only"]
  assert len(data["models"]["cesar"]["natural_overthinking"]["accuracy"]) == 4


def test_report_figures_exist_and_are_not_blank(written):
  out_dir, data, _, _ = written
  assert set(data["figures"]) == {"scaling", "slopes", "perception", "natural_overthinking",
                                  "rewards/cesar"}
  for file in data["figures"].values():
    path = out_dir / file
    assert path.stat().st_size > 10_000, file
    pixels = mpimg.imread(path)[..., :3]
    assert pixels.shape[0] > 300 and pixels.shape[1] > 400
    assert (pixels.std(axis=(0, 1)) > 0.05).any(), f"{file} looks blank"
    assert (pixels < 0.5).mean() > 0.005, f"{file} has almost no dark (line/text) pixels"


def test_report_markdown(written):
  out_dir, data, rising, _ = written
  md = (out_dir / "report.md").read_text()
  for file in data["figures"].values():
    assert f"]({file})" in md
  row = next(line for line in md.splitlines() if line.startswith("| cesar |"))
  assert f"{rising.slope_per_token:+.4f}" in row and f"| {rising.sweet_spot} [" in row
  assert "| outcome only |" in md and "70.0%" in md  # perception precision


def test_report_errors_name_the_model(tmp_path):
  curve = scaling.scaling_curve(_sweep(lambda b: 0.5 + 0 * b, seed=3, num_items=10), num_resamples=20)
  with pytest.raises(KeyError, match="model 'm' lack 'recall'"):
    report.write_report(tmp_path, {"m": {"curve": curve, "perception": {
        "bin_centers": [1.0], "accuracy": [0.5], "counts": [1], "precision": 0.5}}})
  with pytest.raises(ValueError, match="model 'm' must be fractions"):
    report.write_report(tmp_path, {"m": {"curve": curve, "perception": {
        "bin_centers": [1.0], "accuracy": [55.0], "counts": [1], "precision": 0.5, "recall": 0.5}}})
  with pytest.raises(FileNotFoundError, match="metrics file of model 'm'"):
    report.write_report(tmp_path, {"m": {"curve": curve, "metrics": str(tmp_path / "none.jsonl")}})
  with pytest.raises(ValueError, match="model 'm': unknown report keys"):
    report.write_report(tmp_path, {"m": {"curve": curve, "perceptoin": {}}})


def test_single_budget_report_writes_null_slope(tmp_path):
  sweep = scaling.SweepResults(np.arange(4), np.zeros(4, int), np.zeros(4, int),
                               np.array([True, False, True, True]), np.zeros(4, int))
  data = report.write_report(tmp_path, {"one budget": sweep})  # SweepResults -> curve
  m = json.loads((tmp_path / "report.json").read_text())["models"]["one budget"]
  assert m["accuracy"] == [75.0] and m["slope_per_token"] is None and m["sweet_spot"] == 0
  assert (tmp_path / data["figures"]["slopes"]).stat().st_size > 5_000


def test_metrics_errors_name_file_and_line(tmp_path):
  from cesar_jax.eval import plots
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 0, "reward/format": 1.0}\n{"reward/format": 0.5}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: metrics row has no 'step'"):
    plots.plot_rewards(path)
  path.write_text('{"step": 0, "loss": 1.0}\n')
  with pytest.raises(ValueError, match="no 'reward/\\*' keys"):
    plots.plot_rewards(path)


def test_two_protocol_report_with_arms_seeds_comparisons_and_training(tmp_path):
  """The experiment layout: protocols, natural lengths, seeds, comparisons, training."""
  from cesar_jax.eval import experiment
  budgets = (0, 16, 32, 64)
  def sweep(slope, seed):
    rng = np.random.default_rng(seed)
    item, budget, sample = np.meshgrid(np.arange(40), budgets, np.arange(4), indexing="ij")
    correct = rng.random(item.shape) < 0.5 + slope * budget
    return scaling.SweepResults(item.ravel(), budget.ravel(), sample.ravel(), correct.ravel(),
                                np.minimum(budget, 30).ravel())
  runs = {"a_s0": sweep(0.0, 0), "a_s1": sweep(0.0, 1), "b_s0": sweep(0.006, 2),
          "b_s1": sweep(0.006, 3)}
  metrics = {}
  for name in runs:
    path = tmp_path / f"{name}.jsonl"
    with open(path, "w") as f:
      for step in range(20):
        up = 0.02 * step if name.startswith("b") else 0.0
        f.write(json.dumps({"step": step, "reward/total": 1 + up, "reward/total_std": 0.1,
                            "think_length": 30}) + "\n")
    metrics[name] = str(path)
  entries = {}
  for name, r in runs.items():
    curves = {p: scaling.scaling_curve(r, num_resamples=200, fixed_budget=32)
              for p in ("cap", "extend")}
    entries[name] = {"curve": curves["cap"], "protocols": curves, "natural_think_tokens": 30.0,
                     "metrics": metrics[name],
                     "answer_rates": {"cap": [100.0, 90.0, 80.0, 70.0], "extend": [1, 2, 3, 4]}}
  arms = {"a": ["a_s0", "a_s1"], "b": ["b_s0", "b_s1"]}
  summary = {
      "fixed_budget": 32,
      "seeds": {arm: {"models": names, "protocols": {p: {
          "slope_per_token": [entries[n]["protocols"][p].slope_per_token for n in names],
          "slope_ci": [list(entries[n]["protocols"][p].slope_ci) for n in names],
          "accuracy_at_fixed": [entries[n]["protocols"][p].fixed_accuracy for n in names],
          "pooled": scaling.pooled_curve([runs[n] for n in names], num_resamples=200,
                                         fixed_budget=32)} for p in ("cap", "extend")}}
                for arm, names in arms.items()},
      "comparisons": {"b_minus_a": {p: experiment.compare_arms(
          [runs[n] for n in arms["a"]], [runs[n] for n in arms["b"]], fixed_budget=32,
          num_resamples=200) for p in ("cap", "extend")}},
      "training": {arm: experiment.training_summary([metrics[n] for n in names],
                                                    num_resamples=200)
                   for arm, names in arms.items()},
  }
  out = report.write_report(tmp_path / "out", entries, chance_accuracy=25.0, experiment=summary)
  data = json.loads((tmp_path / "out" / "report.json").read_text())
  assert data == json.loads(json.dumps(out))
  for p in ("cap", "extend"):
    m = data["protocols"][p]["models"]["b_s0"]
    for key in ("budgets", "accuracy", "ci_low", "ci_high", "mean_think_tokens",
                "slope_per_token", "slope_ci", "sweet_spot", "sweet_spot_ci", "fixed_accuracy"):
      assert key in m, key
    c = data["comparisons"]["b_minus_a"][p]
    assert set(c) >= {"slope_diff", "slope_diff_ci", "accuracy_diff", "accuracy_diff_ci"}
    assert c["slope_diff_ci"][0] > 0  # the constructed difference (0.6 pts/token) is found
  assert data["natural_think_tokens"] == {n: 30.0 for n in runs}
  assert data["protocols"]["cap"]["models"]["a_s0"]["answer_rate"] == [100.0, 90.0, 80.0, 70.0]
  assert data["seeds"]["b"]["models"] == ["b_s0", "b_s1"]
  assert set(data["training"]["a"]) == {"total", "think_length"}  # total_std is no component
  assert data["training"]["b"]["total"]["ci"][0] > 0 and data["training"]["a"]["total"]["diff"] == 0
  md = (tmp_path / "out" / "report.md").read_text()
  assert "| 80.0% |" in md and "answers naming an option at 32" in md
  for heading in ("## Protocol: cap", "## Protocol: extend", "## Comparisons",
                  "## Did GRPO move the policy?", "## GRPO arms pooled over training seeds"):
    assert heading in md
  for file in data["figures"].values():
    assert (tmp_path / "out" / file).is_file() and f"]({file})" in md


def test_perception_decay_per_model_arm_and_comparison_in_json_and_markdown(tmp_path):
  from cesar_jax.eval import experiment
  rng = np.random.default_rng(0)
  def chains(decay):
    item = np.repeat(np.arange(20), 5)
    x = rng.uniform(10, 120, item.size)
    return item, x, np.clip(0.95 - decay * x + rng.normal(0, 0.03, item.size), 0, 1)
  arm_chains = {"a": [chains(0.003), chains(0.003)], "b": [chains(0.0), chains(0.0)]}
  curve = scaling.scaling_curve(_sweep(lambda b: 0.5 + 0 * b, seed=0), num_resamples=50)
  entries = {}
  for arm, cs in arm_chains.items():
    for s, c in enumerate(cs):
      entries[f"{arm}_s{s}"] = {"curve": curve, "perception": {
          "bin_centers": [50.0], "accuracy": [float(c[2].mean())], "counts": [c[0].size],
          "precision": float(c[2].mean()), "recall": 0.5,
          "decay": experiment.perception_decay([c], num_items=20, num_resamples=100)}}
  summary = {"seeds": {arm: {"models": [f"{arm}_s0", f"{arm}_s1"], "protocols": {},
                             "perception": experiment.perception_decay(
                                 cs, num_items=20, num_resamples=100)}
                       for arm, cs in arm_chains.items()},
             "perception_comparisons": {"b_minus_a": experiment.compare_perception(
                 arm_chains["a"], arm_chains["b"], num_items=20, num_resamples=100)}}
  out = report.write_report(tmp_path, entries, experiment=summary)
  data = json.loads((tmp_path / "report.json").read_text())
  assert data == json.loads(json.dumps(out))
  decay = data["models"]["a_s0"]["perception"]["decay"]
  assert decay["slope_per_100_tokens"] < -20 and decay["slope_ci"][1] < 0  # truth: -30
  c = data["perception_comparisons"]["b_minus_a"]
  assert c["decay_diff_ci"][0] > 0 and c["seeds"] == [2, 2]
  md = (tmp_path / "report.md").read_text()
  d = data["seeds"]["a"]["perception"]
  assert (f"| a | {d['mean_precision']:.1f} [{d['mean_ci'][0]:.1f}, {d['mean_ci'][1]:.1f}] | "
          f"{d['slope_per_100_tokens']:+.1f}") in md
  assert f"| b_minus_a | {c['decay_diff']:+.1f} [{c['decay_diff_ci'][0]:+.1f}," in md
  assert f"| a_s0 | " in md and f"{decay['slope_per_100_tokens']:+.1f} [" in md
