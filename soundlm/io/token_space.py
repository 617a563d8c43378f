"""The token space: what a codec and a semantic tokenizer produce together and
what a language model consumes.

One frozen record of the rates, levels and vocabularies, made from the two
tokenizers (`TokenSpace.of`), recorded in every token shard manifest, and
checked against a model's needs in one place (`check_compatible`).
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class TokenSpace:
  """Semantic tokens (vocabulary, frame rate) and acoustic codes (levels,
  codebook size, frame rate) of audio at `sample_rate`."""
  sample_rate: int
  codec_frame_rate: float
  semantic_frame_rate: float
  num_levels: int
  codebook_size: int
  semantic_vocab: int

  def __post_init__(self):
    ratio = self.codec_frame_rate / self.semantic_frame_rate
    if ratio != int(ratio) or ratio < 1:
      raise ValueError(f"codec frame rate {self.codec_frame_rate} Hz is not a whole multiple "
                       f"of the semantic frame rate {self.semantic_frame_rate} Hz; the two "
                       "token streams cannot be aligned")

  @classmethod
  def of(cls, codec, semantic, num_levels: int | None = None) -> "TokenSpace":
    """The space of `codec` (its first `num_levels` levels, default all) and of
    the semantic tokenizer `semantic`."""
    levels = codec.num_levels if num_levels is None else num_levels
    if not 1 <= levels <= codec.num_levels:
      raise ValueError(f"num_levels: expected 1..{codec.num_levels}, got {levels}")
    return cls(sample_rate=int(codec.sample_rate), codec_frame_rate=float(codec.frame_rate),
               semantic_frame_rate=float(semantic.frame_rate), num_levels=levels,
               codebook_size=int(codec.codebook_size),
               semantic_vocab=int(semantic.vocab_size))

  @property
  def frames_per_semantic(self) -> int:
    return int(self.codec_frame_rate // self.semantic_frame_rate)

  def check_compatible(self, *, num_levels=None, codebook_size=None, semantic_vocab=None,
                       codec_frame_rate=None, semantic_frame_rate=None,
                       frames_per_semantic=None, where: str = "token shards",
                       model: str = "the model config"):
    """Raises ValueError naming each setting of `model` that this space does not
    fit (None: not checked). `num_levels` may be at most this space's levels (a
    model may use the first ones)."""
    problems = []
    if num_levels is not None and num_levels > self.num_levels:
      problems.append(f"num_levels={num_levels} but {where} hold {self.num_levels} levels")
    for name, value in (("codebook_size", codebook_size), ("semantic_vocab", semantic_vocab),
                        ("codec_frame_rate", codec_frame_rate),
                        ("semantic_frame_rate", semantic_frame_rate),
                        ("frames_per_semantic", frames_per_semantic)):
      if value is not None and value != getattr(self, name):
        problems.append(f"{name}={value} but {where} have {getattr(self, name)}" + (
            f" ({self.codec_frame_rate:g} Hz codec frames per {self.semantic_frame_rate:g} Hz "
            "semantic token)" if name == "frames_per_semantic" else ""))
    if problems:
      raise ValueError(f"{where} do not match {model}: " + "; ".join(problems))
