"""Shared Flax building blocks: attention, feed-forward, Transformer and Conformer
blocks, causal convolutions and the residual vector quantizer."""
