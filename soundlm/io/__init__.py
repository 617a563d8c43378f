"""I/O, the lowest layer: audio files, the built-in corpus, folder and TFDS
sources, token shard files, and seeded resumable iterators.

It knows nothing of models or jobs, so every other layer may import it.
TensorFlow, TFDS and seqio are imported lazily (`soundlm.io.tf_env`), so
`import soundlm.io.<module>` works on hosts without TensorFlow."""
