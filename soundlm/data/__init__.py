"""Data jobs: the offline tokenization job, seqio tasks and mixtures, their
preprocessors and feature converters, and the trainer's input iterator.

Audio files, corpora, sources and token shard files are `soundlm.io`. These
modules import TensorFlow, TFDS and seqio lazily (`soundlm.io.tf_env`), so
`import soundlm.data.<module>` works on hosts without TensorFlow."""
