"""Every config file loads (default and with an arg), is locked, and holds the published values."""

import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from cesar_jax import main as main_lib
from cesar_jax.models import config as model_config
from cesar_jax.rl import optim
from cesar_jax.rl import trainer
from cesar_jax import sft

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = ("smoke", "synthetic_tiny", "qwen2_audio_7b", "qwen2_audio_7b_r1aqa",
               "qwen2_audio_7b_cesar")
ARGS = {  # one non-default arg each
    "smoke": "job=sft,steps=3",
    "synthetic_tiny": "job=sft,sft_steps=7",
    "qwen2_audio_7b": "init_from=/ckpt/q7b,job=sft",
    "qwen2_audio_7b_r1aqa": "steps=5,data_dir=/data/avqa",
    "qwen2_audio_7b_cesar": "steps=5,init_from=/ckpt/q7b",
}


def _load(name: str, arg: str | None = None):
  """Loads a config as `cesar_jax.main` does (config_flags, locked)."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  spec = str(CONFIGS / f"{name}.py") + (f":{arg}" if arg else "")
  values(["prog", f"--config={spec}"])
  return values.config


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_loads_with_and_without_arg_and_is_locked(name):
  default = _load(name)
  with_arg = _load(name, ARGS[name])
  assert default != with_arg
  for config in (default, with_arg):
    assert config.job in main_lib.JOBS
    with pytest.raises(AttributeError):
      config.no_such_field = 1  # locked
    with pytest.raises(AttributeError):
      config.sampling.no_such_field = 1
    # The sections build what the jobs build (no weights allocated).
    model_config.from_config_dict(config.model)
    optim.make_optimizer(config.optim)
    optim.make_optimizer(sft.optim_section(config))
    trainer.step_config(config)
    assert config.data.batch_size % config.grpo.grad_accum_steps == 0
    assert config.optim.total_steps == config.steps
  with pytest.raises(KeyError, match="unknown config arg 'stepz'"):
    _load(name, "stepz=3")


def test_overrides_keep_types_and_unknown_keys_error():
  """What `--config.a.b=v` does (cesar_jax.main; the subprocess runs of tests/rl use it)."""
  config = _load("smoke")
  config.sampling.num_samples = 3
  config.debug.nan_steps = (2, 5)
  with pytest.raises(TypeError):
    config.sampling.num_samples = "three"
  with pytest.raises(AttributeError, match="num_sample"):
    config.sampling.num_sample = 3


def test_a_steps_override_moves_the_learning_rate_schedule_with_it():
  """`--config.steps=N` on the command line: the cosine must end at N, not at the file's
  step count (it did, and the lr was 0 past it)."""
  config = _load("smoke")
  config.steps = 37  # what the `--config.steps=37` flag does to the loaded config
  assert config.steps == 37 and config.optim.total_steps == 37
  schedule = optim.learning_rate_schedule(config.optim)
  assert float(schedule(30)) > 0.0 and float(schedule(37)) == pytest.approx(
      config.optim.lr * config.optim.end_lr_ratio)


def test_arg_values_land_where_they_should():
  config = _load("smoke", "job=sft,steps=3,sft_steps=9,init_from=/tmp/x")
  assert (config.job, config.steps, config.sft.steps, config.init_from) == ("sft", 3, 9, "/tmp/x")
  config = _load("synthetic_tiny", "reward=outcome,examples=64")
  assert dict(config.rewards.weights) == {"accuracy": 1.0, "format": 1.0}
  assert config.data.num_examples == 64


def test_cesar_recipe_has_the_published_values():
  c = _load("qwen2_audio_7b_cesar")
  # CESAR (arXiv 2510.20867): K = 8, lr 1e-5, batch 32, weights 5/1/1/1/1, L_max_output 256.
  assert c.sampling.num_samples == 8 and c.optim.lr == 1e-5 and c.data.batch_size == 32
  assert dict(c.rewards.weights) == {"accuracy": 5.0, "format": 1.0, "consistency": 1.0,
                                     "keywords": 1.0, "overthinking": 1.0}
  assert c.rewards.overthinking.max_think_tokens == 256
  assert c.grpo.advantage == "none"  # A = R - mean_K(R)
  assert c.model.preset == "qwen2_audio_7b"
  # float32 masters (the optimizer's), bfloat16 compute: an update of ~1e-5 must not round away.
  assert (c.model.param_dtype, c.model.dtype) == ("float32", "bfloat16")


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.py") if p.name != "common.py"),
                         ids=lambda p: p.stem)
def test_every_config_file_runs_a_job_that_exists(path):
  """Every file in configs/ loads with its defaults and names a job of `cesar_jax.main`, and so
  does every stage of a multi-stage job."""
  config = _load(path.stem)
  main_lib.resolve_job(config.job)
  for stage in (config.get("stages") or {}).values():
    main_lib.resolve_job(stage.job)


def test_r1aqa_recipe_has_the_published_values():
  c = _load("qwen2_audio_7b_r1aqa")
  # R1-AQA (arXiv 2503.11197): G 8, temperature 1.0, lr 1e-6, beta 0.04, 256 tokens, std + 1e-4.
  assert (c.sampling.num_samples, c.sampling.temperature, c.optim.lr, c.grpo.beta) == (
      8, 1.0, 1e-6, 0.04)
  assert c.sampling.max_new_tokens == 256 and c.grpo.advantage == "group" and c.grpo.mu == 1
  assert dict(c.rewards.weights) == {"accuracy": 1.0, "format": 1.0}
  assert c.sampling.budget_mode == "prompted" and c.sampling.think_budget == 0


def test_demo_args_arms_seeds_arch_and_fast():
  c = _load("demo")
  assert c.arms == ("outcome", "cesar") and c.seeds == 2
  grpo = sorted(k for k in c.stages if k not in ("sft", "eval"))
  assert grpo == ["cesar_s0", "cesar_s1", "outcome_s0", "outcome_s1"]
  # The arms of one seed are paired (same seed, same data order), the seeds differ.
  assert c.stages.outcome_s1.seed == c.stages.cesar_s1.seed == 1 != c.stages.cesar_s0.seed
  assert c.stages.outcome_s1.data.seed == 1
  # Rewarded: accuracy + format; the reward-optimum diagnostics are logged with weight 0.
  assert dict(c.stages.outcome_s0.rewards.weights) == {
      "accuracy": 1.0, "format": 1.0, "think_concepts": 0.0, "keyword_density": 0.0}
  assert c.stages.cesar_s0.rewards.weights.keywords == 1.0
  assert c.stages.cesar_s0.rewards.guard.min_think_tokens == 0  # the paper's formula
  assert _load("demo", "guard=16").stages.cesar_s1.rewards.guard.min_think_tokens == 16
  e = c.stages.eval.eval
  assert tuple(e.protocols) == ("cap", "extend") and e.num_samples >= 4
  assert e.fixed_budget in e.budgets and e.max_new_tokens > max(e.budgets)
  c = _load("demo", "arms=outcome,cesar,seeds=3,scale=2")
  assert c.seeds == 3 and "cesar_s2" in c.stages
  assert c.stages.cesar_s2.steps == 2 * _load("demo").stages.cesar_s0.steps
  assert _load("demo", "arms=cesar+outcome,fast=1").arms == ("cesar", "outcome")
  bad = (ValueError, flags.IllegalFlagValueError)  # config_flags wraps the config's error
  with pytest.raises(bad, match="unknown or repeated reward presets \\['nope'\\]"):
    _load("demo", "arms=outcome,nope")
  with pytest.raises(bad, match="arch='x'"):
    _load("demo", "arch=x")
  with pytest.raises(bad, match="guard=-1"):
    _load("demo", "guard=-1")
