"""AudioLM's three autoregressive stages: semantic, coarse and fine acoustic LMs.

`layouts` turns tokens into each stage's model sequence and back, `model` is
the decoder-only Transformer, `decoding` the jitted KV-cached sampler,
`sampling` the per-stage generation with prompts and windows, `tasks` the
training tasks and `api.AudioLM` the three stages together.
"""
