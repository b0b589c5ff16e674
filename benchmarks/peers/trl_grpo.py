"""TRL's GRPOTrainer on the benchmark's work (run by benchmarks/grpo_step.py in TRL's venv).

argv[1]: the work as JSON (model dims, prompts, G, new tokens, beta, steps, warm-up, prompt
tokens). Prints one JSON line: s_per_step, sampling_s, update_s, params (medians after warm-up).
"""

import json
import pathlib
import statistics
import sys
import tempfile
import time

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

TOKENIZER = pathlib.Path(__file__).resolve().parents[2] / "cesar_jax" / "assets" / "tokenizer.json"


def main() -> None:
  work = json.loads(sys.argv[1])
  torch.manual_seed(0)
  torch.set_num_threads(2)
  tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER), pad_token="<|endoftext|>",
                                eos_token="<|im_end|>")
  tmp = pathlib.Path(tempfile.mkdtemp())
  model = Qwen2ForCausalLM(Qwen2Config(
      vocab_size=len(tok), hidden_size=work["hidden_size"],
      intermediate_size=work["intermediate_size"], num_hidden_layers=work["num_hidden_layers"],
      num_attention_heads=work["num_attention_heads"],
      num_key_value_heads=work["num_key_value_heads"], max_position_embeddings=4096,
      tie_word_embeddings=False, initializer_range=0.02, pad_token_id=tok.pad_token_id,
      eos_token_id=tok.eos_token_id))
  model.save_pretrained(tmp / "model")  # beta > 0: TRL rebuilds the reference from this path
  tok.save_pretrained(tmp / "model")
  # Text prompts of the same token count as cesar_jax's (audio tokens included).
  words = " ".join(["beep"] * work["prompt_tokens"])
  ids = tok(words)["input_ids"][:work["prompt_tokens"]]
  prompt = tok.decode(ids)
  total = work["steps"] + work["warmup"]
  data = Dataset.from_dict({"prompt": [prompt] * (work["prompts"] * total)})

  def reward(completions, **kwargs):
    return [float(len(c) % 5) for c in completions]

  args = GRPOConfig(
      output_dir=str(tmp / "out"), per_device_train_batch_size=work["prompts"] * work["num_samples"],
      num_generations=work["num_samples"], max_completion_length=work["new_tokens"],
      beta=work["beta"], temperature=work["temperature"], learning_rate=1e-5,
      max_steps=total, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
      bf16=False, gradient_accumulation_steps=1, num_iterations=1, disable_tqdm=True,
      dataloader_num_workers=0, shuffle_dataset=False)
  trainer = GRPOTrainer(model=str(tmp / "model"), reward_funcs=reward, args=args,
                        train_dataset=data, processing_class=tok)
  steps, sampling = [], []

  generate = trainer._generate_and_score_completions  # pylint: disable=protected-access

  def timed_generate(*a, **k):
    t0 = time.perf_counter()
    out = generate(*a, **k)
    sampling.append(time.perf_counter() - t0)
    return out

  trainer._generate_and_score_completions = timed_generate  # pylint: disable=protected-access

  class Clock(TrainerCallback):
    def on_step_begin(self, *a, **k):
      self.t0 = time.perf_counter()

    def on_step_end(self, *a, **k):
      steps.append(time.perf_counter() - self.t0)

  trainer.add_callback(Clock())
  trainer.train()
  w = work["warmup"]
  s, g = steps[w:], sampling[w:len(steps)]
  print(json.dumps({"impl": "trl", "s_per_step": statistics.median(s),
                    "sampling_s": statistics.median(g),
                    "update_s": statistics.median(a - b for a, b in zip(s, g)),
                    "params": sum(p.numel() for p in trainer.model.parameters())}))


if __name__ == "__main__":
  main()
