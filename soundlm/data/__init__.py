"""Data: audio sources, the built-in corpus, tokenization, seqio tasks, input pipelines.

Only this package may use TensorFlow, TFDS and seqio, and it imports them
lazily (`soundlm.data.tf_env`), so `import soundlm.data.<module>` works on
hosts without TensorFlow."""
