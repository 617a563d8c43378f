"""SoundStorm: parallel generation of RVQ codec tokens from semantic tokens.

A bidirectional Conformer over summed per-level code embeddings, trained with
the paper's prompt/level/cosine masking and decoded level by level with
MaskGIT confidence-based sampling.
"""
