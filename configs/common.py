"""Shared builders of config sections, so that each experiment file stays short and flat.

An experiment file (see configs/smoke.py) parses its `arg` with `cesar_jax.config.parse_arg`,
calls `base(...)` for the full set of sections with this project's defaults, then sets what it
changes, one flat line each. Sections (all locked: an unknown key is an error naming it):

  job, seed, init_from, tokenizer, steps, log_every, checkpoint_every, keep_checkpoints
  model      preset + field overrides (cesar_jax.models.config.from_config_dict); vocab_size
             and audio_token_id default to the tokenizer's
  mesh       shape over ('data', 'fsdp', 'tensor'); one -1 takes the remaining devices
  data       dataset, split, filters, batch size (prompts), prompt buckets, audio front end
  sampling   G samples per prompt, temperature / top-p / top-k, max new tokens, think budget
  rewards    cesar_jax.rewards.default_config(preset)
  grpo       advantage estimator, loss aggregation, beta, clip epsilons, mu, grad accumulation
  optim      cesar_jax.rl.optim.default_config() (AdamW, warmup + cosine, clipping)
  sft        the SFT job's own steps, lr, batch and target length
  lora       LoRA adapters (cesar_jax.lora.default_config(): rank 0 = off)
  compile_check  TPU topology and knobs of the compile_check job (cesar_jax.compile_check)
  debug      fault injection for the robustness tests (off by default)
"""

from __future__ import annotations

import ml_collections

from cesar_jax import lora
from cesar_jax import rewards
from cesar_jax.rl import optim


def model(preset: str = "tiny", **overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(preset=preset, **overrides))


def data(**overrides) -> ml_collections.ConfigDict:
  section = ml_collections.ConfigDict(dict(
      name="synthetic",  # synthetic | mmau | mmar | avqa
      dir="",  # synthetic: "" = generated in memory, else a tfds data_dir to cache it in;
      #          benchmarks: the prepared tfds folder (cesar_jax.data.builders)
      split="train",
      num_examples=256,  # synthetic only
      question_types=(),  # synthetic generator filter; () = all
      tasks=(),  # sound / music / speech; () = all
      synthetic=ml_collections.ConfigDict(dict(clip_seconds=4.0, min_semitones=1, max_count=5,
                                               trace_times=True)),
      batch_size=32,  # prompts per step, global
      buckets=(256, 512, 1024),  # prompt lengths (tokens) prompts are left-padded to
      chunk_seconds=30.0,  # Whisper's window
      n_mels=128,  # Qwen2-Audio's front end
      worker_count=0,
      skip_bad_records=False,
      seed=0,
  ))
  section.update(overrides)
  return section


def sampling(**overrides) -> ml_collections.ConfigDict:
  section = ml_collections.ConfigDict(dict(
      num_samples=8,  # G = K = 8: R1-AQA (arXiv 2503.11197) and CESAR (arXiv 2510.20867)
      temperature=1.0,  # R1-AQA
      top_p=1.0,
      top_k=0,
      max_new_tokens=256,  # R1-AQA's max_completion_length
      budget_mode="forced",  # forced | prompted (see cesar_jax.sampling.budgets)
      think_budget=-1,  # -1: none; >= 0 forced by the sampler or stated in the prompt
      prefill_batch=0,  # prompts per sampler prefill pass; 0 = all at once (memory vs passes)
  ))
  section.update(overrides)
  return section


def grpo(**overrides) -> ml_collections.ConfigDict:
  section = ml_collections.ConfigDict(dict(
      advantage="group",  # group | batch | none (cesar_jax.rl.grpo registries)
      loss_aggregation="grpo",  # grpo | bnpo | dr_grpo | dapo
      beta=0.0,  # KL coefficient; 0 skips the reference model
      epsilon_low=0.2,  # TRL's default clip; CESAR's is not public
      epsilon_high=0.2,
      mu=1,  # optimizer updates per sampled batch
      grad_accum_steps=1,  # minibatches (of whole groups) per update
      old_logp="recompute",  # mu > 1: old log-probs from a teacher-forced forward of the
      #                        pre-update policy (TRL's num_iterations > 1), or "sampler"'s
      completion_buckets=1,  # > 1: the update skips completion columns past the batch's
      #                        longest completion, compiling for this many widths at most
      log_entropy=True,
  ))
  section.update(overrides)
  return section


def optimizer(steps: int, **overrides) -> ml_collections.ConfigDict:
  section = optim.default_config()
  section.total_steps = steps
  section.update(overrides)
  return section


def sft(**overrides) -> ml_collections.ConfigDict:
  section = ml_collections.ConfigDict(dict(
      steps=100,
      lr=1e-5,
      warmup_steps=0,
      batch_size=32,
      max_target_tokens=256,  # trace + <|im_end|>; longer ones are cut (and counted)
      grad_accum_steps=1,
  ))
  section.update(overrides)
  return section


def compile_check(**overrides) -> ml_collections.ConfigDict:
  """The compile_check job's section (cesar_jax.compile_check: what each knob measures)."""
  section = ml_collections.ConfigDict(dict(
      topology="v5e:8x8",  # GENERATION:AxB[xC] (cesar_jax/parallel/chips.py)
      programs=("sampler_prefill", "sampler_decode", "grpo_update", "sft_step"),
      hbm_gib=0.0,  # per-chip memory budget; 0 = the chip's published HBM
      remat="",  # "" = the model config's policy; none | full | dots overrides it
      logits_chunk=-1,  # -1 = the updates' default; 0 = full [N, M, V] logits
      activation_constraints=True,  # lower under jax.set_mesh (the models' constraints apply)
      costs=True,  # flops / bytes / roofline from unrolled 1-2 layer compiles; False: memory only
  ))
  section.update(overrides)
  return section


def base(*, job: str = "grpo", steps: int = 100, reward_preset: str = "cesar",
         model_preset: str = "tiny") -> ml_collections.ConfigDict:
  """Every section with the project defaults; the caller overrides and then `lock()`s."""
  config = ml_collections.ConfigDict()
  config.job = job
  config.seed = 0
  config.init_from = ""  # "" random init | a Hugging Face directory | a previous run's workdir
  config.tokenizer = ""  # "" = the init_from's tokenizer.json, else the built-in one
  config.steps = steps
  config.log_every = 10
  config.checkpoint_every = 50
  config.keep_checkpoints = 3

  config.model = model(model_preset)
  config.mesh = ml_collections.ConfigDict(dict(shape=(1, -1, 1)))  # FSDP over all devices
  config.data = data()
  config.sampling = sampling()
  config.rewards = rewards.default_config(reward_preset)
  config.grpo = grpo()
  config.optim = optimizer(steps)
  # The schedule's length IS the run's: `--config.steps=N` moves both (a FieldReference; an
  # override of one alone left the cosine at its old length, the lr 0 past it).
  config.optim.total_steps = config.get_ref("steps")
  config.sft = sft()
  config.lora = lora.default_config()  # rank 0: full fine-tuning; > 0: only adapters train
  config.compile_check = compile_check()
  config.debug = ml_collections.ConfigDict(dict(
      nan_steps=(),  # GRPO steps whose loss is made NaN (tests the non-finite skip)
  ))
  return config
