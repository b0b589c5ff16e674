"""The compile_check job (TPU programs compiled on this CPU) and the CPU default with libtpu.

The compile tests need libtpu (the `[tpu]` extra: `pip install -e '.[tpu]'`) and skip, saying
so, without it. The platform tests run everywhere.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cesar_jax import platforms
from cesar_jax.parallel import chips

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = {"argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "peak_bytes",
          "flops", "bytes_accessed", "roofline_s"}

needs_libtpu = pytest.mark.skipif(
    not platforms.libtpu_installed(),
    reason="needs libtpu for abstract TPU devices: pip install -e '.[tpu]' (jax[tpu] pinned to "
           "the installed jax)")


# ---------------------------------------------------------------------------------------------
# Chips table and topology names.
# ---------------------------------------------------------------------------------------------


def test_topology_names_and_roofline():
  assert chips.parse_topology("v5e:8x8") == ("v5e", (8, 8))
  assert chips.num_chips("v5p:2x2x2") == 8
  assert chips.accelerator_type("v5e:8x8") == "v5litepod-64"
  assert chips.accelerator_type("v5p:2x2x2") == "v5p-16"  # cores, two per chip
  v5e = chips.CHIPS["v5e"]
  assert v5e.hbm_bytes == 16 * chips.GiB
  # Compute-bound and memory-bound cases of max(flops / peak, bytes / bandwidth).
  assert v5e.roofline_s(197e12, 1.0) == pytest.approx(1.0)
  assert v5e.roofline_s(1.0, 819e9 * 2) == pytest.approx(2.0)
  for spec in chips.CHIPS.values():
    assert spec.source.startswith("https://cloud.google.com/tpu/docs/")
  with pytest.raises(ValueError, match="'v9x:2x2'.*v4.*v5e.*v5p.*v6e"):
    chips.parse_topology("v9x:2x2")
  with pytest.raises(ValueError, match="GENERATION:AxB"):
    chips.parse_topology("v5e")


# ---------------------------------------------------------------------------------------------
# CPU default when libtpu is installed without a TPU.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("libtpu, chip, preset, want", [
    (True, False, None, "cpu"),      # a CPU host with the [tpu] extra: CPU, no TPU start-up
    (True, True, None, None),        # a TPU VM: JAX picks the TPU
    (False, False, None, None),      # no libtpu: nothing to avoid
    (True, False, "tpu", None),      # the user chose
])
def test_default_to_cpu_only_with_libtpu_and_no_chip(monkeypatch, libtpu, chip, preset, want):
  monkeypatch.setattr(platforms, "libtpu_installed", lambda: libtpu)
  monkeypatch.setattr(platforms, "tpu_chips_present", lambda: chip)
  if preset is None:
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  else:
    monkeypatch.setenv("JAX_PLATFORMS", preset)
  set_config = []
  monkeypatch.setattr(sys.modules["jax"].config, "update",
                      lambda name, value: set_config.append((name, value)))
  assert platforms.default_to_cpu() == want
  assert os.environ.get("JAX_PLATFORMS") == (preset if want is None else "cpu")
  assert set_config == ([] if want is None else [("jax_platforms", "cpu")])


@needs_libtpu
def test_a_cpu_job_with_libtpu_installed_runs_on_cpu_without_tpu_warnings():
  """A jitted GRPO function in a fresh process, JAX_PLATFORMS unset: CPU backend, quiet."""
  code = textwrap.dedent("""
      import time
      start = time.perf_counter()
      import jax, numpy as np
      from cesar_jax.rl import grpo
      adv = jax.jit(grpo.group_advantages, static_argnums=1)(np.arange(8.0), 4)
      print(jax.default_backend(), len(jax.devices()), float(adv.sum()),
            round(time.perf_counter() - start, 2))
  """)
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_PLATFORMS", "TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE")}
  env["PYTHONPATH"] = REPO
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300, check=True)
  backend, _, total, _ = out.stdout.split()
  assert backend == "cpu" and abs(float(total)) < 1e-5
  for noise in ("TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES", "libtpu", "TPU"):
    assert noise not in out.stderr, out.stderr


# ---------------------------------------------------------------------------------------------
# The job on a tiny config for v5e:2x2.
# ---------------------------------------------------------------------------------------------


def _tiny_config(**compile_check):
  sys.path.insert(0, REPO)
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top
  config = synthetic_tiny.get_config()
  with config.unlocked():
    config.compile_check.topology = "v5e:2x2"
    config.compile_check.update(compile_check)
  return config


@pytest.fixture(scope="module")
def sampler_report(tmp_path_factory):
  from cesar_jax import compile_check  # pylint: disable=g-import-not-at-top
  config = _tiny_config(programs=("sampler_prefill", "sampler_decode"))
  report = compile_check.check(config)
  workdir = tmp_path_factory.mktemp("compile_check")
  path = compile_check.write_report(report, str(workdir))
  return config, report, json.loads(path.read_text())


@needs_libtpu
def test_compile_check_report_fields_and_numbers(sampler_report):
  config, report, written = sampler_report
  assert written == json.loads(json.dumps(report))
  assert written["topology"] == "v5e:2x2" and written["chips"] == 4
  assert written["hbm_per_chip_bytes"] == 16 * chips.GiB
  assert written["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  assert set(written["programs"]) == {"sampler_prefill", "sampler_decode"}
  assert written["fits"] is True
  for name, p in written["programs"].items():
    assert FIELDS <= set(p), name
    assert p["argument_bytes"] > 0 and p["flops"] > 0 and p["bytes_accessed"] > 0, name
    assert p["peak_bytes"] == (p["argument_bytes"] + p["output_bytes"] - p["alias_bytes"]
                               + p["temp_bytes"])
    assert p["fits"] and p["peak_bytes"] < written["hbm_per_chip_bytes"]
    assert p["roofline_s"] == pytest.approx(
        p["repeats"] * chips.CHIPS["v5e"].roofline_s(p["flops"], p["bytes_accessed"]))
  decode = written["programs"]["sampler_decode"]
  # The decode donates its KV cache: aliased, and repeated once per new token at most.
  assert decode["alias_bytes"] > 0
  assert decode["repeats"] == config.sampling.max_new_tokens
  # The optimizer state (Adam: 2 moments of the trainable params) stays resident while sampling.
  prefill = written["programs"]["sampler_prefill"]
  assert prefill["resident_bytes"] > prefill["argument_bytes"] // 2


@needs_libtpu
def test_costs_are_the_unrolled_programs_though_the_layers_compile_as_a_scan(sampler_report):
  """XLA counts a loop body once: the scanned program's own cost analysis sees one layer per
  stack; the report's flops and bytes (`layer_costs`, from compiles with two layers per loop
  iteration) are those of the program compiled with every layer unrolled."""
  from cesar_jax import compile_check, model_store  # pylint: disable=g-import-not-at-top
  from cesar_jax.models import stack  # pylint: disable=g-import-not-at-top
  config, report, _ = sampler_report
  devices = compile_check.topology_devices("v5e:2x2")
  mesh = compile_check.make_mesh(tuple(config.mesh.shape), devices)
  tokenizer = model_store.load_tokenizer(config.tokenizer, config.init_from)
  names = ("sampler_prefill", "sampler_decode")
  assert report["model"]["decoder_layers"] == 2 and report["model"]["encoder_layers"] >= 2
  with stack.unrolled():
    unrolled = compile_check.lower_programs(config, mesh, tokenizer, names)
  scanned = compile_check.lower_programs(config, mesh, tokenizer, names)
  for name in names:
    flops, nbytes = compile_check.cost(unrolled[name]["lowered"].compile())
    p = report["programs"][name]
    assert p["flops"] == pytest.approx(flops, rel=0.01), name
    assert p["bytes_accessed"] == pytest.approx(nbytes, rel=0.05), name
    assert p["cost_compile_s"] > 0
    assert compile_check.cost(scanned[name]["lowered"].compile())[0] < 0.9 * flops, name


@needs_libtpu
def test_a_program_over_the_memory_budget_is_reported_as_not_fitting():
  from cesar_jax import compile_check  # pylint: disable=g-import-not-at-top
  config = _tiny_config(programs=("sampler_prefill",), hbm_gib=1e-5,  # ~10 KiB per chip
                        costs=False)  # memory only: no cost compiles, no cost figures
  report = compile_check.check(config)
  assert report["hbm_per_chip_bytes"] == int(1e-5 * chips.GiB)
  prefill = report["programs"]["sampler_prefill"]
  assert prefill["peak_bytes"] > report["hbm_per_chip_bytes"]
  assert prefill["fits"] is False and report["fits"] is False
  assert prefill["flops"] is None and prefill["roofline_s"] is None
  assert "cost_compile_s" not in prefill
  assert "False" in compile_check.format_table(report)


@needs_libtpu
def test_unknown_program_and_topology_are_errors_naming_them():
  from cesar_jax import compile_check  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="'v5x:2x2'"):
    compile_check.check(_tiny_config(topology="v5x:2x2"))
  with pytest.raises(ValueError, match=r"\['decode'\].*sampler_prefill"):
    compile_check.check(_tiny_config(programs=("decode",)))


@needs_libtpu
@pytest.mark.slow
def test_the_job_compiles_every_program_through_the_entry_point(tmp_path):
  """`python -m cesar_jax.main ... --config.job=compile_check` writes the JSON and a table."""
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("JAX_PLATFORMS", None)
  out = subprocess.run(
      [sys.executable, "-m", "cesar_jax.main", "--config=configs/synthetic_tiny.py",
       "--config.job=compile_check", "--config.compile_check.topology=v5e:2x2",
       f"--workdir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=900, check=True)
  report = json.loads((tmp_path / "compile_check.json").read_text())
  assert set(report["programs"]) == {"sampler_prefill", "sampler_decode", "grpo_update",
                                     "sft_step"}
  assert report["fits"] is True
  update = report["programs"]["grpo_update"]
  assert update["alias_bytes"] > 0  # the train state is donated
  assert "grpo_update" in out.stdout and "roofline" in out.stdout


def test_a_program_the_compiler_refuses_for_hbm_is_reported_not_fitting():
  from cesar_jax import compile_check  # pylint: disable=g-import-not-at-top
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
             "temporaries (18.01G) exceeds available HBM (15.75G).")
  entry = compile_check.out_of_memory(message, repeats=4, resident=0)
  assert entry["fits"] is False and entry["roofline_s"] is None
  assert entry["temp_bytes"] == int(18.01 * chips.GiB)
  assert entry["error"].startswith("RESOURCE_EXHAUSTED")
