"""Writes tests/fixtures/hubert/: two tiny random Hugging Face HuBERT models and
the hidden states the reference implementation computes for them.

Needs PyTorch and transformers (only here, never at soundlm's run time):

    python -m venv /tmp/fixture-venv
    /tmp/fixture-venv/bin/pip install torch transformers numpy safetensors
    /tmp/fixture-venv/bin/python scripts/make_hubert_fixture.py

The layouts are HuBERT base's ('base': group-norm feature extractor, post-norm
layers) and HuBERT large's ('stable': layer-norm extractor with conv biases,
pre-norm layers, `do_stable_layer_norm`), with the real convolution kernels and
strides (320 samples per frame) and few channels. Each folder `<layout>/`
holds `config.json`, `model.safetensors` and `preprocessor_config.json`.
`reference.npz` holds two clips of different lengths zero-padded into one
batch (`waveform`, `lengths`) and for each layout:

  hidden_<layout>_clip<i>   every layer's hidden states of clip i alone
                            (feature extractor, then model): [L + 1, T_i, H]
  last_<layout>_clip<i>     its last_hidden_state (after the final norm)
  hidden_<layout>_batch     the padded batch as the reference runs it:
                            [L + 1, 2, T, H]; with the attention mask for the
                            layer-norm extractor, without one (as Hugging Face
                            advises) for the group-norm extractor
"""
import os

import numpy as np
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from make_w2v_bert_fixture import fixture_dir, perturbed, save_reference, waveform

LAYOUTS = {
    "base": dict(feat_extract_norm="group", conv_bias=False, do_stable_layer_norm=False,
                 feat_proj_layer_norm=True, num_conv_pos_embeddings=16,
                 conv_dim=(16, 16, 16, 16, 16, 16, 24)),
    "stable": dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True,
                   feat_proj_layer_norm=False, num_conv_pos_embeddings=15,
                   conv_dim=(12, 12, 12, 12, 12, 12, 20)),
}
# Whether the reference gets an attention mask for padded batches (and
# normalises each clip), as the released base and large extractors are set.
MASKED = {"base": False, "stable": True}


def clips() -> list[np.ndarray]:
  """Two clips of different lengths, neither a whole number of 320-sample frames."""
  return [waveform(1.0)[:15_950], 0.7 * waveform(0.72)[::-1].copy()]


def tiny_model(layout: str, seed: int) -> HubertModel:
  config = HubertConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
      num_conv_pos_embedding_groups=4, conv_stride=(5, 2, 2, 2, 2, 2, 2),
      conv_kernel=(10, 3, 3, 3, 3, 2, 2), mask_time_prob=0.05, layerdrop=0.0,
      **LAYOUTS[layout])
  return perturbed(HubertModel, config, seed)


def run(model, values, mask=None):
  """(hidden states [L + 1, B, T, H], last_hidden_state [B, T, H]) as numpy."""
  with torch.no_grad():
    out = model(torch.from_numpy(values), attention_mask=mask, output_hidden_states=True)
  hidden = torch.stack(out.hidden_states).numpy()
  if hidden.shape[0] != model.config.num_hidden_layers + 1:
    raise RuntimeError(f"expected {model.config.num_hidden_layers + 1} hidden states, "
                       f"got {hidden.shape[0]}")
  return hidden, out.last_hidden_state.numpy()


def main():
  out = fixture_dir("hubert", __doc__.splitlines()[0])
  wavs = clips()
  lengths = np.array([w.size for w in wavs])
  batch = np.zeros((len(wavs), lengths.max()), np.float32)
  for i, w in enumerate(wavs):
    batch[i, :w.size] = w
  arrays = {"waveform": batch, "lengths": lengths}
  for seed, layout in enumerate(LAYOUTS):
    model = tiny_model(layout, seed)
    folder = os.path.join(out, layout)
    model.save_pretrained(folder, safe_serialization=True)
    extractor = Wav2Vec2FeatureExtractor(do_normalize=MASKED[layout],
                                         return_attention_mask=MASKED[layout])
    extractor.save_pretrained(folder)
    for i, w in enumerate(wavs):
      values = extractor(w, sampling_rate=16_000, return_tensors="np")["input_values"]
      hidden, last = run(model, values.astype(np.float32))
      arrays[f"hidden_{layout}_clip{i}"], arrays[f"last_{layout}_clip{i}"] = hidden[:, 0], last[0]
    padded = extractor(list(wavs), sampling_rate=16_000, padding=True, return_tensors="pt")
    mask = padded["attention_mask"] if MASKED[layout] else None
    arrays[f"hidden_{layout}_batch"], _ = run(model, padded["input_values"].numpy(), mask)
  save_reference(out, arrays)


if __name__ == "__main__":
  main()
