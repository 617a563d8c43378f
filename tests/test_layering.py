"""Layers import downward only, and top-level parts of soundlm import each other
in no cycle.

Every module under soundlm/ is read as an AST (nothing is imported), and every
`import x` and `from x import y` counts, at module level or inside a function,
relative imports resolved. A module that sits in no layer fails the test, so a
new module has to be placed here.
"""
import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "soundlm"

# Lowest first. A module belongs to the longest prefix that names it.
LAYERS = (
    ("io", (
        "soundlm",  # the package root (exact name only): a docstring and the version
        "soundlm.io",  # audio read/write, corpora, folder/TFDS sources, token shard files
    )),
    ("core", (
        "soundlm.layers",
        "soundlm.partitioning",
        "soundlm.checkpoints",
        "soundlm.trainer",
        "soundlm.configs",
        "soundlm.gin_utils",
        "soundlm.rng",
        "soundlm.tokens",
    )),
    ("models", (
        "soundlm.codec",
        "soundlm.semantic",
        "soundlm.audiolm",
        "soundlm.soundstorm",
        "soundlm.toy_lm",
        # The one loader builds every family's module from its config, so it
        # imports the families and sits in their layer; the families' public
        # APIs (FACADES) build on it.
        "soundlm.models",
    )),
    ("jobs", (
        "soundlm.data",
        "soundlm.train",
        "soundlm.generate",
        "soundlm.decode",
        "soundlm.quickstart",
        "soundlm.cli",
        "soundlm.bench",
        "soundlm.compile",
        "soundlm.evaluate",
        "soundlm.evaluation",
    )),
)

# Jobs that live inside a model package, with the reason they live there.
JOBS_IN_MODEL_PACKAGES = {
    "soundlm.semantic.fit_kmeans": "the k-means fitting command (python -m) of the semantic "
                                   "tokenizer: it reads a corpus and runs the embedder",
}

# Family APIs count as their own part in the cycle check: `soundlm.models`
# builds on the families' modules and configs, and these APIs build on it.
FACADES = ("soundlm.codec.api", "soundlm.semantic.api", "soundlm.audiolm.api",
           "soundlm.soundstorm.api")

LAYER_NAMES = [name for name, _ in LAYERS]


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
  path = PACKAGE.parent.joinpath(*name.split("."))
  return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(name: str) -> int | None:
  """Index into LAYERS, or None for a module that no layer names."""
  if name in JOBS_IN_MODEL_PACKAGES:
    return LAYER_NAMES.index("jobs")
  best, found = -1, None
  for index, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      exact_only = prefix == "soundlm"
      if name == prefix or (not exact_only and name.startswith(prefix + ".")):
        if len(prefix) > best:
          best, found = len(prefix), index
  return found


def part_of(name: str) -> str:
  """The top-level part of soundlm that a module belongs to (cycle check unit)."""
  for special in (*JOBS_IN_MODEL_PACKAGES, *FACADES):
    if name == special or name.startswith(special + "."):
      return special
  return ".".join(name.split(".")[:2])


def imports_in(text: str, name: str, is_package: bool = False) -> list[tuple[int, str]]:
  """(line, imported soundlm module) for every import statement in module `name`."""
  package = name if is_package else name.rpartition(".")[0]
  found = []
  for node in ast.walk(ast.parse(text)):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        parts = package.split(".")
        base = parts[:len(parts) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
      else:
        source = node.module
      for alias in node.names:  # `from pkg import module` imports the module itself
        target = f"{source}.{alias.name}"
        found.append((node.lineno, target if is_module(target) else source))
  return sorted((line, target) for line, target in found
                if target == "soundlm" or target.startswith("soundlm."))


def imports_of(path: pathlib.Path) -> list[tuple[int, str]]:
  return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def all_edges() -> list[tuple[pathlib.Path, int, str, str]]:
  """(file, line, importing module, imported module) over the whole package."""
  return [(path, line, module_name(path), target)
          for path in sorted(PACKAGE.rglob("*.py"))
          for line, target in imports_of(path)]


def _where(path, line) -> str:
  return f"{path.relative_to(PACKAGE.parent)}:{line}"


def test_every_module_has_a_layer():
  modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
  modules |= {target for *_, target in all_edges()}
  unplaced = sorted(m for m in modules if layer_of(m) is None)
  assert not unplaced, (f"modules in no layer: {unplaced}; place each in LAYERS of "
                        f"{pathlib.Path(__file__).name}")


def test_imports_point_downward_or_sideways():
  upward = [f"{_where(path, line)}: {source} ({LAYER_NAMES[layer_of(source)]}) imports "
            f"{target} ({LAYER_NAMES[layer_of(target)]})"
            for path, line, source, target in all_edges()
            if None not in (layer_of(source), layer_of(target))
            and layer_of(target) > layer_of(source)]
  assert not upward, "upward imports (layers: " + " < ".join(LAYER_NAMES) + "):\n" + "\n".join(
      upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one node (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for succ in sorted(graph.get(node, ())):
      if succ not in index:
        visit(succ)
        low[node] = min(low[node], low[succ])
      elif succ in on_stack:
        low[node] = min(low[node], index[succ])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


def test_top_level_parts_import_each_other_in_no_cycle():
  graph, where = {}, {}
  for path, line, source, target in all_edges():
    a, b = part_of(source), part_of(target)
    if a != b:
      graph.setdefault(a, set()).add(b)
      where.setdefault((a, b), _where(path, line))
  reports = []
  for component in _cycles(graph):
    edges = [f"  {a} -> {b} ({where[a, b]})" for a in component for b in component
             if (a, b) in where]
    reports.append(" <-> ".join(component) + ":\n" + "\n".join(edges))
  assert not reports, "import cycles:\n" + "\n".join(reports)


def test_the_walk_reads_local_and_relative_imports():
  text = ("import os\n"
          "from soundlm.io import audio, corpus\n"
          "def f():\n"
          "  from . import model\n"
          "  from ..io.audio import read_audio\n"
          "  import soundlm.generate\n"
          "  from soundlm import partitioning\n")
  assert imports_in(text, "soundlm.codec.probe") == [
      (2, "soundlm.io.audio"), (2, "soundlm.io.corpus"), (4, "soundlm.codec.model"),
      (5, "soundlm.io.audio"), (6, "soundlm.generate"), (7, "soundlm.partitioning")]
  assert imports_in("from .. import io\n", "soundlm.codec", is_package=True) == [
      (1, "soundlm.io")]
  assert layer_of("soundlm.generate") > layer_of("soundlm.codec.probe")
  assert layer_of("soundlm.semantic.fit_kmeans") == LAYER_NAMES.index("jobs")
  assert layer_of("soundlm.nonexistent") is None


def test_every_module_imports_without_tensorflow():
  """Accelerator hosts have no TensorFlow: soundlm.io and soundlm.data import it
  lazily, and nothing else imports it at all."""
  code = (
      "import sys, pkgutil, importlib\n"
      "for name in ('tensorflow', 'tensorflow_datasets', 'seqio'):\n"
      "  sys.modules[name] = None\n"
      "import soundlm\n"
      "names = [m.name for m in pkgutil.walk_packages(soundlm.__path__, 'soundlm.')]\n"
      "for name in names:\n"
      "  importlib.import_module(name)\n"
      "print(len(names))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=PACKAGE.parent)
  assert out.returncode == 0, out.stderr
  assert int(out.stdout) == sum(1 for _ in PACKAGE.rglob("*.py")) - 1  # all but the root
