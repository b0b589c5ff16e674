"""cesar_jax: RL for audio-language-model reasoning, and test-time scaling evaluation, in JAX."""

import setuptools

setuptools.setup(
    name="cesar_jax",
    version="0.1.0",
    description="Process-reward RL (CESAR) for audio LLM reasoning, in JAX / Flax NNX.",
    packages=setuptools.find_packages(include=["cesar_jax", "cesar_jax.*"]),
    package_data={"cesar_jax": ["assets/*"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "tensorflow-datasets>=4.9.10",
        "grain>=0.2.18",
        "ml-collections>=1.1.0",
        "einops>=0.8",
        "numpy",
        "safetensors",
        "tqdm",
        "absl-py",
        "tokenizers>=0.21",
        "soundfile",
        "soxr",
        "tensorboardX",
        "matplotlib",
        "qwix>=0.1.8",  # LoRA adapters (cesar_jax/lora.py)
    ],
    extras_require={
        # torch/transformers are only used to prove parity and to benchmark against.
        # torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
        "hf": ["torch==2.13.0", "transformers>=5.0"],
        "test": ["pytest", "pytest-xdist", "hypothesis", "chex", "torch==2.13.0", "transformers>=5.0",
                 "fsspec",
                 # tests/test_notebooks.py executes the notebooks in a Jupyter kernel.
                 "papermill>=2.6", "nbclient>=0.10", "ipykernel>=6"],
        "notebooks": ["jupyter", "ipywidgets"],
        # TPU VMs and the compile check: libtpu (abstract TPU devices on any host; pinned to the
        # installed jax; on a host without a TPU the package still picks the CPU backend) and
        # gcsfs (gs:// workdirs, read and written through etils.epath -> fsspec).
        "tpu": ["jax[tpu]==0.10.2", "gcsfs"],
    },
)
