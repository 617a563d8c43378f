"""Writes tests/fixtures/w2v_bert/: tiny random Hugging Face w2v-BERT 2.0 models
and the hidden states the reference implementation computes for them.

Needs PyTorch and transformers (only here, never at soundlm's run time):

    python -m venv /tmp/fixture-venv
    /tmp/fixture-venv/bin/pip install torch transformers numpy safetensors
    /tmp/fixture-venv/bin/python scripts/make_w2v_bert_fixture.py

For each position scheme the folder `<scheme>/` holds `config.json` and
`model.safetensors` (written by `save_pretrained`); `reference.npz` holds the
waveform, the SeamlessM4T input features computed from it, and for each
scheme every layer's hidden states, [num_layers + 1, frames, width].
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers
from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

SCHEMES = ("relative_key", "rotary")


def waveform(seconds: float = 1.0, rate: int = 16_000) -> np.ndarray:
  """A deterministic speech-like test signal: a gliding harmonic tone with
  syllable-rate amplitude modulation and a little noise."""
  t = np.arange(int(seconds * rate)) / rate
  pitch = 120 + 40 * np.sin(2 * np.pi * 1.5 * t)
  phase = 2 * np.pi * np.cumsum(pitch) / rate
  voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
  envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
  noise = np.random.default_rng(0).standard_normal(t.size)
  return (0.2 * envelope * voiced + 0.01 * noise).astype(np.float32)


def fixture_dir(name: str, description: str) -> str:
  """The --out folder of a fixture script (default tests/fixtures/<name>)."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "..", "tests", "fixtures", name))
  return parser.parse_args().out


def save_reference(out: str, arrays: dict) -> None:
  """Writes `reference.npz` and the versions of the reference libraries."""
  np.savez_compressed(os.path.join(out, "reference.npz"), **arrays)
  with open(os.path.join(out, "versions.json"), "w") as f:
    json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f,
              indent=1)
  print("wrote", os.path.abspath(out), {k: v.shape for k, v in arrays.items()})


def perturbed(model_class, config, seed: int):
  """`model_class(config)` in eval mode with every tensor moved off its initial
  value (LayerNorm ones, zero biases), so that a parameter mapped to the wrong
  place cannot go unnoticed."""
  torch.manual_seed(seed)
  model = model_class(config).eval()
  with torch.no_grad():
    for param in model.parameters():
      param.add_(0.1 * torch.randn_like(param))
  return model


def tiny_model(scheme: str, seed: int) -> Wav2Vec2BertModel:
  config = Wav2Vec2BertConfig(
      hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48,
      feature_projection_input_dim=160, conv_depthwise_kernel_size=5,
      position_embeddings_type=scheme, left_max_position_embeddings=6,
      right_max_position_embeddings=3, mask_time_prob=0.05, layerdrop=0.0)
  return perturbed(Wav2Vec2BertModel, config, seed)


def main():
  out = fixture_dir("w2v_bert", __doc__.splitlines()[0])
  wav = waveform()
  extractor = SeamlessM4TFeatureExtractor()
  features = extractor(wav, sampling_rate=16_000, padding=False,
                       return_tensors="np")["input_features"].astype(np.float32)
  arrays = {"waveform": wav, "input_features": features[0]}
  for seed, scheme in enumerate(SCHEMES):
    model = tiny_model(scheme, seed)
    model.save_pretrained(os.path.join(out, scheme), safe_serialization=True)
    with torch.no_grad():
      outputs = model(torch.from_numpy(features), output_hidden_states=True)
    hidden = torch.stack(outputs.hidden_states)[:, 0].numpy()
    if hidden.shape[0] != model.config.num_hidden_layers + 1:
      raise RuntimeError(f"expected {model.config.num_hidden_layers + 1} hidden states")
    np.testing.assert_allclose(hidden[-1], outputs.last_hidden_state[0].numpy())
    arrays[f"hidden_states_{scheme}"] = hidden
  save_reference(out, arrays)


if __name__ == "__main__":
  main()
