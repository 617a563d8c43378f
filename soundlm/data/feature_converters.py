"""seqio feature converters: task features -> exactly the models' batch features.

  WaveformConverter   {model_key: float32 [N]}              codec ('waveform'),
                                                            w2v-BERT ('wav')
  TokensConverter     {'tokens': int32 [L]}                 AudioLM stages (PAD = 0)
  SoundStormConverter {'semantic': int32 [S], 'codes': int32 [T, Q],
                       'padding_mask': bool [T]}            SoundStorm

Shorter examples are padded at the end: waveforms with silence, AudioLM
sequences with PAD (never a target), SoundStorm tokens with 0 and
padding_mask False (True marks real frames)."""
import functools

from soundlm.io import tf_env


def _pad_to(x, length, value=0):
  tf = tf_env.tf()
  x = x[:length]
  pad = [[0, length - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
  return tf.pad(x, pad, constant_values=value)


@functools.cache
def _classes():
  seqio = tf_env.seqio()
  tf = tf_env.tf()
  Spec = seqio.FeatureConverter.FeatureSpec

  class _Converter(seqio.FeatureConverter):
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, **kwargs):
      kwargs.setdefault("pack", False)
      super().__init__(**kwargs)

  class WaveformConverter(_Converter):
    TASK_FEATURES = {"wav": Spec(dtype=tf.float32)}

    def __init__(self, model_key: str = "wav", **kwargs):
      self.model_key = model_key
      self.MODEL_FEATURES = {model_key: Spec(dtype=tf.float32)}
      super().__init__(**kwargs)

    def _convert_features(self, ds, task_feature_lengths):
      n = task_feature_lengths["wav"]
      return ds.map(lambda ex: {self.model_key: tf.ensure_shape(_pad_to(ex["wav"], n), [n])},
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def get_model_feature_lengths(self, task_feature_lengths):
      return {self.model_key: task_feature_lengths["wav"]}

  class TokensConverter(_Converter):
    TASK_FEATURES = {"tokens": Spec(dtype=tf.int32)}
    MODEL_FEATURES = {"tokens": Spec(dtype=tf.int32)}

    def _convert_features(self, ds, task_feature_lengths):
      n = task_feature_lengths["tokens"]
      return ds.map(lambda ex: {"tokens": tf.ensure_shape(_pad_to(ex["tokens"], n), [n])},
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def get_model_feature_lengths(self, task_feature_lengths):
      return dict(task_feature_lengths)

  class SoundStormConverter(_Converter):
    TASK_FEATURES = {"semantic": Spec(dtype=tf.int32), "codes": Spec(dtype=tf.int32, rank=2)}
    MODEL_FEATURES = {"semantic": Spec(dtype=tf.int32), "codes": Spec(dtype=tf.int32, rank=2),
                      "padding_mask": Spec(dtype=tf.bool)}

    def _convert_features(self, ds, task_feature_lengths):
      s, t = task_feature_lengths["semantic"], task_feature_lengths["codes"]

      def fn(ex):
        codes = _pad_to(ex["codes"], t)
        mask = tf.range(t) < tf.shape(ex["codes"])[0]
        return {"semantic": tf.ensure_shape(_pad_to(ex["semantic"], s), [s]),
                "codes": tf.ensure_shape(codes, [t, ex["codes"].shape[1]]),
                "padding_mask": mask}
      return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def get_model_feature_lengths(self, task_feature_lengths):
      return dict(task_feature_lengths, padding_mask=task_feature_lengths["codes"])

  return {"wav": WaveformConverter, "tokens": TokensConverter,
          "soundstorm": SoundStormConverter}


def converter(kind: str, **kwargs):
  """A new feature converter: 'wav' (kwarg model_key), 'tokens' or 'soundstorm'."""
  return _classes()[kind](**kwargs)
