"""Writes tests/fixtures/encodec/: tiny random Hugging Face EnCodec models and
what the reference implementation computes for them.

Needs PyTorch and transformers (only here, never at soundlm's run time):

    python -m venv /tmp/fixture-venv
    /tmp/fixture-venv/bin/pip install torch transformers numpy safetensors
    /tmp/fixture-venv/bin/python scripts/make_encodec_fixture.py

Both variants are causal 24 kHz models with encodec_24khz's strides (320
samples per frame, 75 Hz) and tiny channels, 4 levels of 16 codes
(bandwidths 0.6 and 1.2 kbps: 2 and 4 levels). `reflect/` pads like
encodec_24khz (reflect padding, 1x1 convolution shortcuts) with two residual
layers per block (dilations 1 and 2); `constant/` has zero padding, identity
shortcuts and one LSTM layer. Each folder holds `config.json` and
`model.safetensors` (written by `save_pretrained`); `reference.npz` holds the
waveforms [2, N] and, per variant, the encoder output `<v>_embeddings`
[2, T, D], the codes `<v>_codes_<kbps>` [2, T, levels] and the waveform
decoded from them `<v>_decoded_<kbps>` [2, N].
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers
from transformers import EncodecConfig, EncodecModel

SAMPLE_RATE = 24_000
NUM_SAMPLES = 24 * 320  # 24 frames
BANDWIDTHS = (0.6, 1.2)
VARIANTS = {
    "reflect": dict(pad_mode="reflect", use_conv_shortcut=True, num_residual_layers=2,
                    num_lstm_layers=2),
    "constant": dict(pad_mode="constant", use_conv_shortcut=False, num_residual_layers=1,
                     num_lstm_layers=1),
}


def waveforms() -> np.ndarray:
  """Two deterministic test signals: a gliding harmonic tone with syllable-rate
  amplitude modulation, and noise bursts."""
  t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
  pitch = 140 + 60 * np.sin(2 * np.pi * 3 * t)
  phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
  voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
  envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 6 * t) ** 2
  rng = np.random.default_rng(0)
  bursts = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 9 * t) > 0.3)
  return np.stack([0.3 * envelope * voiced + 0.01 * rng.standard_normal(t.size),
                   0.2 * bursts]).astype(np.float32)


def tiny_model(variant: dict, seed: int, wav: torch.Tensor) -> EncodecModel:
  config = EncodecConfig(
      sampling_rate=SAMPLE_RATE, target_bandwidths=list(BANDWIDTHS), num_filters=2,
      hidden_size=8, codebook_size=16, upsampling_ratios=[8, 5, 4, 2], kernel_size=7,
      last_kernel_size=5, residual_kernel_size=3, dilation_growth_rate=2, compress=2,
      use_causal_conv=True, norm_type="weight_norm", normalize=False, **variant)
  torch.manual_seed(seed)
  model = EncodecModel(config).eval()
  # Move every weight off its initial value (zero biases, unit gains) so that
  # a tensor mapped to the wrong place cannot go unnoticed.
  with torch.no_grad():
    for name, param in model.named_parameters():
      param.add_(0.1 * torch.randn_like(param))
    # Codebooks start at zero: seed each level with residual frames of the test
    # signals plus noise, so that every level uses many codes.
    residual = model.encoder(wav[:, None]).transpose(1, 2).reshape(-1, config.hidden_size)
    for layer in model.quantizer.layers:
      book = layer.codebook
      rows = residual[torch.randperm(residual.shape[0])[:config.codebook_size]]
      book.embed.copy_(rows + 0.05 * rows.std() * torch.randn_like(rows))
      book.embed_avg.copy_(book.embed * 2.0)
      book.cluster_size.copy_(torch.rand(config.codebook_size) + 1.0)
      residual = residual - book.decode(book.encode(residual))
  return model


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "..", "tests", "fixtures", "encodec"))
  out = parser.parse_args().out
  wav = waveforms()
  inputs = torch.from_numpy(wav)
  arrays = {"waveform": wav}
  for seed, (name, variant) in enumerate(VARIANTS.items()):
    model = tiny_model(variant, seed, inputs)
    model.save_pretrained(os.path.join(out, name), safe_serialization=True)
    with torch.no_grad():
      arrays[f"{name}_embeddings"] = model.encoder(inputs[:, None]).transpose(1, 2).numpy()
      for bandwidth in BANDWIDTHS:
        encoded = model.encode(inputs[:, None], bandwidth=bandwidth)
        codes = encoded.audio_codes[0]  # [B, levels, T]
        decoded = model.decode(encoded.audio_codes, encoded.audio_scales)[0][:, 0]
        arrays[f"{name}_codes_{bandwidth}"] = codes.transpose(1, 2).numpy().astype(np.int32)
        arrays[f"{name}_decoded_{bandwidth}"] = decoded.numpy()
    used = [len(np.unique(arrays[f"{name}_codes_{BANDWIDTHS[-1]}"][..., q])) for q in range(4)]
    print(name, "distinct codes per level:", used)
  np.savez_compressed(os.path.join(out, "reference.npz"), **arrays)
  with open(os.path.join(out, "versions.json"), "w") as f:
    json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f,
              indent=1)
  print("wrote", os.path.abspath(out), {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
  main()
