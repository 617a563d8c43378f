"""One contract for every model family: config -> module -> inference variables.

A `Family` names its frozen config dataclass, how the config builds the flax
module, the dummy inputs that initialise it, and where its inference
variables sit in the trainer's state. With that, one `random` and one `load`
serve every family:

    model = models.load(workdir)                       # any family, latest step
    model = models.load(workdir, family='soundstorm', mesh=mesh, rules=rules)
    model.module.apply(model.variables, ...)

`load` reads `<workdir>/model.json` (written by `soundlm train`) and restores
only the inference variables (no optimizer state), sharded over a mesh or on
one device, whatever device count wrote the checkpoint; it parses no gin and
touches no global state. The domain APIs (`Codec`, `SemanticTokenizer`,
`AudioLM`, `SoundStorm`) are built on top of it.
"""
import dataclasses
import functools
import logging
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from etils import epath

from soundlm import checkpoints
from soundlm import configs
from soundlm import gin_utils
from soundlm import partitioning
from soundlm.audiolm.model import DecoderLM, StageConfig
from soundlm.codec.model import SoundStream, SoundStreamConfig
from soundlm.semantic.config import W2vBertConfig
from soundlm.semantic.encoder import W2vBertEncoder, input_features
from soundlm.soundstorm.model import SoundStormConfig, SoundStormModel


@dataclasses.dataclass(frozen=True)
class Family:
  """What the contract knows of one model family.

  `init_inputs(config)` returns (args, kwargs) for `module.init`;
  `state_paths` maps each flax collection of the inference variables to its
  path in the trainer's state (`{'params': ('params', 'model')}` for a model
  trained as the parameter group 'model').
  """
  name: str
  config_type: type
  build: Callable[[Any], nn.Module]
  init_inputs: Callable[[Any], tuple[tuple, dict]]
  state_paths: Mapping[str, tuple[str, ...]]

  def abstract_variables(self, config):
    """Shapes of the inference variables, with their logical axis annotations."""
    module = self.build(config)
    args, kwargs = self.init_inputs(config)
    return jax.eval_shape(lambda rng: module.init(rng, *args, **kwargs), jax.random.key(0))


FAMILIES = {family.name: family for family in (
    Family("soundstream", SoundStreamConfig, SoundStream,
           lambda c: ((jnp.zeros((1, c.hop_length), jnp.float32),), {}),
           {"params": ("params", "generator"), "quantizer": ("collections", "quantizer")}),
    Family("w2v_bert", W2vBertConfig, W2vBertEncoder,
           lambda c: ((input_features(jnp.zeros((1, 640), jnp.float32), c),), {}),
           {"params": ("params", "model", "encoder")}),
    Family("audiolm", StageConfig,
           lambda c: DecoderLM(c.model, c.layout.padded_vocab_size),
           lambda c: ((jnp.zeros((1, 1), jnp.int32),), {}),
           {"params": ("params", "model")}),
    Family("soundstorm", SoundStormConfig, SoundStormModel,
           lambda c: ((jnp.zeros((1, 1), jnp.int32),
                       jnp.zeros((1, c.frames_per_semantic_token, c.num_levels), jnp.int32)),
                      {"level": 0}),
           {"params": ("params", "model")}),
)}


def family_of(config) -> Family:
  """The family whose config `config` is."""
  family = FAMILIES.get(getattr(type(config), "FAMILY", None))
  if family is None or not isinstance(config, family.config_type):
    raise TypeError(f"{type(config).__name__} is not the config of a model family "
                    f"({', '.join(f.config_type.__name__ for f in FAMILIES.values())})")
  return family


@dataclasses.dataclass(frozen=True)
class Model:
  """A built module with its inference variables, placed by `partitioner`."""
  config: Any
  module: nn.Module
  variables: dict
  partitioner: partitioning.Partitioner
  source: str  # 'random:seed=N' or the work dir it was loaded from
  step: int | None = None

  @property
  def family(self) -> Family:
    return family_of(self.config)


@functools.lru_cache(maxsize=None)
def _jitted_init(config, partitioner: partitioning.Partitioner):
  """One compiled initialiser per config and placement. It runs once, so it is
  compiled without backend optimisation (several-fold faster to compile on CPU)."""
  family = family_of(config)
  module = family.build(config)
  args, kwargs = family.init_inputs(config)
  shardings = partitioner.shardings(family.abstract_variables(config))
  return jax.jit(lambda rng: partitioning.unbox(module.init(rng, *args, **kwargs)),
                 out_shardings=shardings,
                 compiler_options={"xla_backend_optimization_level": 0})


def random(config, seed: int = 0, *, mesh=None, rules=None) -> Model:
  """A model of `config` with randomly initialised variables, created in place
  (sharded over `mesh` by `rules`, or on the default device)."""
  partitioner = partitioning.Partitioner.of(mesh, rules)
  with partitioner.activate():
    variables = _jitted_init(config, partitioner)(jax.random.key(seed))
  return Model(config, family_of(config).build(config), variables, partitioner,
               source=f"random:seed={seed}")


def config_from_gin(config_type, folder: str, name: str, scope: str | None = None,
                    selector: str | None = None, **overrides):
  """`config_type` from the literal bindings of a named size
  (`gin/<folder>/<name>.gin` inside the package) or of a gin file path, read
  without touching gin's global configuration; `overrides` win."""
  path = name if name.endswith(".gin") else f"gin/{folder}/{name}.gin"
  try:
    values = gin_utils.read_literals(path, selector or config_type.__name__, scope)
  except FileNotFoundError as error:
    known = sorted(p.stem for p in (gin_utils.GIN_ROOT / "gin" / folder).glob("*.gin"))
    raise ValueError(f"config {name!r}: not a named size ({', '.join(known)}) nor an "
                     f"existing gin file") from error
  return config_type(**{**values, **overrides})


def place(model: Model, mesh=None, rules=None) -> Model:
  """The same model with its variables laid out over another mesh (or one device)."""
  partitioner = partitioning.Partitioner.of(mesh, rules)
  abstract = model.family.abstract_variables(model.config)
  return dataclasses.replace(model, partitioner=partitioner,
                             variables=partitioner.place_params(model.variables, abstract))


def read_config(workdir: str, family: str | None = None):
  """The config recorded in `<workdir>/model.json`; with `family`, refuses a
  work dir that trained another family."""
  name, values = configs.read(workdir)
  if name not in FAMILIES:
    raise ValueError(f"{workdir}: unknown model family {name!r} (known: {sorted(FAMILIES)})")
  if family is not None and name != family:
    raise ValueError(f"{workdir} holds a {name!r} model, not a {family!r} model")
  return configs.from_dict(FAMILIES[name].config_type, values)


def load(workdir: str, step: int | None = None, *, family: str | None = None,
         mesh=None, rules=None) -> Model:
  """The model trained in `workdir` at `step` (default: the latest checkpoint)."""
  config = read_config(workdir, family)
  spec = family_of(config)
  partitioner = partitioning.Partitioner.of(mesh, rules)
  abstract = spec.abstract_variables(config)
  shardings = partitioner.shardings(abstract)
  shapes = partitioning.unbox(abstract)
  target, target_shardings = {}, {}
  for collection, path in spec.state_paths.items():
    _set(target, path, shapes[collection])
    _set(target_shardings, path, shardings[collection])
  directory = str(epath.Path(workdir) / "checkpoints")
  restored, step = checkpoints.restore_part(directory, target, target_shardings, step)
  variables = {collection: _get(restored, path)
               for collection, path in spec.state_paths.items()}
  logging.info("%s model restored from %s (step %d)", spec.name, workdir, step)
  return Model(config, spec.build(config), variables, partitioner, source=str(workdir),
               step=step)


def _set(tree: dict, path: tuple[str, ...], value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree
