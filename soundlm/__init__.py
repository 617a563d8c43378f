"""soundlm: the AudioLM family of audio language models in JAX/Flax."""

__version__ = "0.1.0"
