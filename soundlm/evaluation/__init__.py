"""Evaluation of trained models: codec, language models, semantic tokens and generation."""
