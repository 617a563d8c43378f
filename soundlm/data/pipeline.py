"""The trainer's input iterator over a seqio task or mixture.

Design (resumption): the pipeline is a pure function of (seed, host, epoch).
Each epoch is one pass over this host's share of the split, reshuffled and
re-cropped with a seed derived from (seed, epoch), cut into batches with the
last partial batch dropped. The position is (epoch, batches consumed in the
epoch): `get_state()` returns it as JSON, and `set_state()` rebuilds that
epoch's pipeline and skips the consumed batches, so a restored iterator
yields exactly the batch that would have come next. Restoring costs reading
the skipped part of one epoch (never more); nothing is stored but two
integers. (tf.data's own iterator checkpoints would save shuffle buffers of
audio and are not JSON.)
"""
import gin
import numpy as np

from soundlm.data.tasks import TaskSpec
from soundlm.io import tf_env
from soundlm.io.iterators import check_identity, host_split


def epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


@gin.configurable(module="soundlm.data")
class TaskData:
  """This host's share of global batches of `task`, with a restorable position."""

  def __init__(self, task: TaskSpec = gin.REQUIRED, batch_size: int = 16,
               split: str = "train", seed: int = 0, shuffle: bool = True,
               host_index: int | None = None,
               num_hosts: int | None = None):
    self.host, self.num_hosts, self.local_batch_size = host_split(batch_size, host_index,
                                                                  num_hosts)
    self.task, self.batch_size, self.split = task, batch_size, split
    self.seed, self.shuffle = seed, shuffle
    self._epoch, self._batch_in_epoch, self._iterator = 0, 0, None

  def dataset(self, epoch: int):
    """The tf.data pipeline of one epoch: converted, batched, prefetched."""
    seqio = tf_env.seqio()
    tf = tf_env.tf()
    provider = seqio.get_mixture_or_task(self.task.name)
    ds = provider.get_dataset(
        dict(self.task.feature_lengths), split=self.split, shuffle=self.shuffle,
        seed=epoch_seed(self.seed, epoch), shard_info=seqio.ShardInfo(self.host, self.num_hosts),
        num_epochs=1, use_cached=False)
    ds = self.task.make_converter()(ds, dict(self.task.feature_lengths))
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).batch(self.local_batch_size, drop_remainder=True).prefetch(2)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    while True:
      if self._iterator is None:
        ds = self.dataset(self._epoch).skip(self._batch_in_epoch)
        self._iterator = ds.as_numpy_iterator()
      try:
        batch = next(self._iterator)
      except StopIteration:
        if self._batch_in_epoch == 0:
          raise ValueError(f"{self.task.name} ({self.split}): host {self.host} has fewer "
                           f"examples than one batch of {self.local_batch_size}") from None
        self._epoch, self._batch_in_epoch, self._iterator = self._epoch + 1, 0, None
        continue
      self._batch_in_epoch += 1
      return batch

  def _identity(self) -> dict:
    return {"task": self.task.name, "split": self.split, "seed": self.seed,
            "batch_size": self.batch_size, "num_hosts": self.num_hosts, "host": self.host,
            "shuffle": self.shuffle}

  def get_state(self) -> dict:
    return dict(self._identity(), epoch=self._epoch, batch_in_epoch=self._batch_in_epoch)

  def set_state(self, state: dict):
    check_identity(state, self._identity(), "TaskData")
    self._epoch, self._batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
    self._iterator = None
