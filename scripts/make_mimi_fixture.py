"""Writes tests/fixtures/mimi/: a tiny random Hugging Face Mimi model and what
the reference implementation computes for it.

Needs PyTorch and transformers (only here, never at soundlm's run time):

    python -m venv /tmp/fixture-venv
    /tmp/fixture-venv/bin/pip install torch transformers numpy safetensors
    /tmp/fixture-venv/bin/python scripts/make_mimi_fixture.py

The model has kyutai/mimi's strides (1920 samples per frame: 12.5 Hz codes,
the transformers at 25 Hz) with tiny widths: two transformer layers of two
query heads sharing one key/value head, a sliding window of 5 steps, a
grouped upsampling convolution (8 groups), 1 semantic and 3 acoustic levels
of 16 codes of dimension 8. `model/` holds `config.json` and
`model.safetensors` (written by `save_pretrained`); `reference.npz` holds the
waveforms [2, N], the encoder output `embeddings` [2, T, hidden] (the latents
the quantizer reads), `codes` [2, T, 4] and the waveforms decoded from all
levels (`decoded_4`) and from the first two (`decoded_2`), [2, N].
"""
import os

import numpy as np
import torch
from transformers import MimiConfig, MimiModel

from make_w2v_bert_fixture import fixture_dir, perturbed, save_reference, waveform

SAMPLE_RATE = 24_000
NUM_SAMPLES = 8 * 1920  # 8 frames, 16 transformer steps (the window is 5)
LEVELS = (2, 4)


def tiny_model(wav: torch.Tensor) -> MimiModel:
  config = MimiConfig(
      sampling_rate=SAMPLE_RATE, frame_rate=12.5, hidden_size=16, num_filters=2,
      upsampling_ratios=[8, 6, 5, 4], num_hidden_layers=2, intermediate_size=24,
      num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=5,
      codebook_size=16, codebook_dim=8, vector_quantization_hidden_dimension=8,
      num_quantizers=LEVELS[-1], num_semantic_quantizers=1, upsample_groups=8)
  model = perturbed(MimiModel, config, seed=0)
  # Codebooks start at zero: seed each level with (projected, residual) latent
  # frames of the test signals plus noise, so that every level uses many codes.
  with torch.no_grad():
    # Random weights decode to peaks near 50; scale the last convolution so
    # that decoded audio lies in [-1, 1] like real audio.
    model.decoder.decoder_seanet.layers[-1].conv.weight.mul_(0.02)
    model.decoder.decoder_seanet.layers[-1].conv.bias.mul_(0.02)
    latents = model.encoder(wav[:, None]).latents
    quantizer = model.quantizer
    for rvq in (quantizer.semantic_residual_vector_quantizer,
                quantizer.acoustic_residual_vector_quantizer):
      residual = rvq.input_proj(latents).transpose(1, 2).reshape(-1, config.codebook_dim)
      for layer in rvq.layers:
        book = layer.codebook
        rows = residual[torch.randperm(residual.shape[0])[:config.codebook_size]]
        usage = torch.rand(config.codebook_size) + 0.5
        book.embed_sum.copy_((rows + 0.05 * rows.std() * torch.randn_like(rows)) * usage[:, None])
        book.cluster_usage.copy_(usage)
        book._embed = None
        residual = residual - book.decode(book.encode(residual))
  return model


def main():
  out = fixture_dir("mimi", __doc__.splitlines()[0])
  voiced = waveform(1.0, SAMPLE_RATE)[:NUM_SAMPLES]
  wav = np.stack([voiced, 0.5 * voiced[::-1]]).astype(np.float32)
  inputs = torch.from_numpy(wav)
  model = tiny_model(inputs)
  model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
  arrays = {"waveform": wav}
  with torch.no_grad():
    arrays["embeddings"] = model.encoder(inputs[:, None]).latents.transpose(1, 2).numpy()
    for levels in LEVELS:
      codes = model.encode(inputs[:, None], num_quantizers=levels).audio_codes  # [B, Q, T]
      arrays[f"decoded_{levels}"] = model.decode(codes).audio_values[:, 0].numpy()
    arrays["codes"] = codes.transpose(1, 2).numpy().astype(np.int32)
  used = [len(np.unique(arrays["codes"][..., q])) for q in range(LEVELS[-1])]
  print("distinct codes per level:", used, "decoded peak:", np.abs(arrays["decoded_4"]).max())
  save_reference(out, arrays)


if __name__ == "__main__":
  main()
