"""What a linear codec makes of the built-in speech: `python -m soundlm.bench.linear_codec`.

A yardstick for codec targets: the quality that second-order statistics alone
buy at a frame size and bitrate. Each clip is cut into frames of `--hop`
samples (the codec's frame); the frames of the training split (speech and
piano, the quickstart codec's data) give principal components; a frame is
coded by its first D coefficients, either kept exactly or quantized by a
residual k-means quantizer (`--levels` levels of `--codebook_size` codes,
fit on the training coefficients with the codec's own k-means), and decoded
by the transpose. Held-out speech is scored with the codec evaluation's
SI-SNR and mel distance, per D and per number of levels.

Writes `linear_codec.json` and `linear_codec.md` into `--out_dir`
(`--markdown FILE` and `--from_json` as the other benchmarks).
"""
import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from soundlm.bench import common
from soundlm.evaluation import metrics
from soundlm.io import corpus
from soundlm.layers import rvq


def _frames(wav: np.ndarray, hop: int) -> np.ndarray:
  """[N] -> [N // hop, hop]; the last partial frame is left out."""
  return wav[:wav.size // hop * hop].reshape(-1, hop).astype(np.float64)


def principal_components(frames: np.ndarray) -> np.ndarray:
  """[hop, hop]: columns are the frames' principal directions, largest first."""
  _, vectors = np.linalg.eigh(frames.T @ frames / len(frames))
  return vectors[:, ::-1]


def fit_residual_codebooks(coefficients: np.ndarray, levels: int, codebook_size: int,
                           iterations: int, seed: int) -> list[np.ndarray]:
  """One k-means codebook per level, each fit on the residual the levels
  before it leave."""
  residual = jnp.asarray(coefficients, jnp.float32)
  codebooks = []
  for level in range(levels):
    codebook, _ = rvq.kmeans(residual, codebook_size, iterations,
                             jax.random.key(seed + level))
    residual = residual - codebook[rvq.nearest(residual, codebook)]
    codebooks.append(np.asarray(codebook))
  return codebooks


def quantize(coefficients: np.ndarray, codebooks: list[np.ndarray]) -> np.ndarray:
  """The coefficients as the sum of each level's nearest code to the residual."""
  residual = jnp.asarray(coefficients, jnp.float32)
  quantized = jnp.zeros_like(residual)
  for codebook in codebooks:
    code = codebook[np.asarray(rvq.nearest(residual, jnp.asarray(codebook)))]
    quantized, residual = quantized + code, residual - code
  return np.asarray(quantized, np.float64)


def _score(clips, hop: int, code) -> dict:
  """Mean SI-SNR and mel distance of `code(frames) -> frames` on `clips`."""
  si_snr, mel = [], []
  for clip in clips:
    frames = _frames(clip.waveform, hop)
    estimate = code(frames).reshape(-1).astype(np.float32)
    reference = clip.waveform[:estimate.size].astype(np.float32)
    si_snr.append(metrics.si_snr(reference, estimate))
    mel.append(metrics.mel_distance(reference, estimate))
  return {"si_snr": float(np.mean(si_snr)), "mel_distance": float(np.mean(mel))}


def measure(args, argv) -> dict:
  train = corpus.load_builtin("train", kind="speech") + corpus.load_builtin("train",
                                                                             kind="piano")
  held_out = corpus.load_builtin("validation", kind="speech", max_clips=args.clips)
  rate = held_out[0].sample_rate
  frames = np.concatenate([_frames(c.waveform, args.hop) for c in train])
  basis = principal_components(frames)
  sample = np.random.default_rng(args.seed).permutation(len(frames))[:args.kmeans_rows]
  bits_per_level = math.log2(args.codebook_size) * rate / args.hop
  rows = []
  for dims in args.components:
    projection = basis[:, :dims]
    rows.append({"components": dims, "levels": None, "kbps": None,
                 **_score(held_out, args.hop, lambda f: f @ projection @ projection.T)})
    codebooks = fit_residual_codebooks(frames[sample] @ projection, args.levels,
                                       args.codebook_size, args.kmeans_iterations, args.seed)
    for levels in sorted({1, args.levels}):
      rows.append({"components": dims, "levels": levels,
                   "kbps": levels * bits_per_level / 1000,
                   **_score(held_out, args.hop, lambda f: quantize(
                       f @ projection, codebooks[:levels]) @ projection.T)})
  return {"benchmark": "linear_codec", "size": "builtin", "hop": args.hop,
          "sample_rate": rate, "codebook_size": args.codebook_size,
          "train_frames": len(frames), "kmeans_rows": len(sample),
          "held_out_clips": len(held_out),
          "held_out_seconds": sum(c.waveform.size for c in held_out) / rate,
          "rows": rows, "environment": common.environment(),
          "command": common.command_line("soundlm.bench.linear_codec", argv)}


def render(report: dict) -> str:
  return common.markdown_table(
      ["components", "levels", "kbps", "SI-SNR (dB)", "mel distance"],
      [[row["components"], "exact" if row["levels"] is None else row["levels"],
        "-" if row["kbps"] is None else f"{row['kbps']:.2f}", f"{row['si_snr']:.2f}",
        f"{row['mel_distance']:.3f}"] for row in report["rows"]])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hop", type=int, default=320, help="samples per frame")
  parser.add_argument("--components", type=int, nargs="+", default=[32, 64, 128])
  parser.add_argument("--levels", type=int, default=8)
  parser.add_argument("--codebook_size", type=int, default=64)
  parser.add_argument("--kmeans_rows", type=int, default=20_000,
                      help="training frames the codebooks are fit on")
  parser.add_argument("--kmeans_iterations", type=int, default=20)
  parser.add_argument("--clips", type=int, default=None, help="held-out clips (default: all)")
  parser.add_argument("--seed", type=int, default=0)
  common.add_output_flags(parser, "bench_out")
  args = parser.parse_args(argv)
  if not args.from_json:
    if args.hop < 1 or not all(1 <= d <= args.hop for d in args.components):
      parser.error(f"--components must lie in 1..--hop ({args.hop}), got {args.components}")
    for name in ("levels", "kmeans_rows", "kmeans_iterations"):
      if getattr(args, name) < 1:
        parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.codebook_size < 2:
      parser.error(f"--codebook_size must be >= 2, got {args.codebook_size}")
    if args.clips is not None and args.clips < 1:
      parser.error(f"--clips must be >= 1, got {args.clips}")
  return common.measure_or_render(args, argv, measure, render, save_as="linear_codec")


if __name__ == "__main__":
  raise SystemExit(main())
