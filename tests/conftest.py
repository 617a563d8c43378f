"""Test set-up: eight virtual CPU devices, configured before JAX is imported,
and a distribution over pytest-xdist workers that builds every shared fixture
once.

A shared fixture (module-, package- or session-scoped, defined under tests/:
a trained tiny model, a random pipeline, a finished run) is built by every
worker that runs one of its users. `launch/test.sh` runs the suite with
`-n 2 --dist loadgroup`; `pytest_collection_modifyitems` below gives every
test that uses a shared fixture an `xdist_group` named after the fixture
(tests linked through shared fixtures or explicit groups get one group), so
loadgroup hands all of a fixture's users to one worker as one unit and the
fixture is built once in the whole run. Tests without shared fixtures stay
free to go to either worker.

pytest-xdist 3.8 carries the group to its scheduler as an `@<group>` suffix
of the node id, written to `item._nodeid`; pytest 9.2 keeps node ids in
`item._id` (a structured `NodeId`) and ignores that write, so the suffix, and
with it every group, was silently lost (pytest-dev/pytest-xdist#1386) and each
worker built the module fixtures of its share of a module's tests.
`_GroupSuffix` writes the suffix where this pytest keeps the id whenever
xdist's write did not take. tests/test_xdist_groups.py checks the result.
"""
import os
import pathlib

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# gs:// paths go through gcsfs, which reaches the GCS emulator of
# tests/test_multihost_gcs.py; etils.epath caches its choice of TensorFlow's
# gfile (which cannot) on the first gs:// path of the process.
os.environ.setdefault("EPATH_USE_TF", "false")

TESTS_DIR = pathlib.Path(__file__).resolve().parent
GROUP_MARK = "xdist_group"


def _shared_fixtures(item):
  """Keys of the non-function-scoped fixtures under tests/ that `item` uses."""
  info = getattr(item, "_fixtureinfo", None)
  if info is None:
    return []
  keys = []
  for name in item.fixturenames:
    definitions = info.name2fixturedefs.get(name)
    if not definitions:
      continue
    definition = definitions[-1]  # the one this item gets (innermost override)
    if definition.scope == "function":
      continue
    code = getattr(definition.func, "__code__", None)
    path = pathlib.Path(code.co_filename).resolve() if code else None
    if path is None or TESTS_DIR not in path.parents:
      continue  # pytest's own (tmp_path_factory, ...) and plugins' fixtures
    owner = "" if path.name == "conftest.py" else path.stem + "."
    keys.append(owner + name)
  return keys


def _group_names(item):
  names = set()
  for mark in item.iter_markers(GROUP_MARK):
    names.add(str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")))
  return names


def _find(parent, key):
  while parent[key] != key:
    parent[key] = parent[parent[key]]
    key = parent[key]
  return key


def fixture_groups(items):
  """{item: sorted group names}: one group per set of tests that share, directly
  or through each other, a shared fixture or an explicit xdist_group name."""
  parent = {}
  keys_of = {}
  for item in items:
    keys = [("fixture", k) for k in _shared_fixtures(item)]
    keys += [("group", g) for g in sorted(_group_names(item))]
    keys_of[item] = keys
    for key in keys:
      parent.setdefault(key, key)
    for key in keys[1:]:
      parent[_find(parent, key)] = _find(parent, keys[0])
  members = {}
  for keys in keys_of.values():
    for key in keys:
      members.setdefault(_find(parent, key), []).append(key)
  names = {}
  for root, keys in members.items():
    explicit = sorted({name for kind, name in keys if kind == "group"})
    # An explicit group keeps its name; otherwise the first shared fixture names it.
    names[root] = explicit or [keys[0][1]]
  return {item: names[_find(parent, keys[0])] for item, keys in keys_of.items() if keys}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  """Marks each user of a shared fixture with its group (before xdist reads the
  marks), so that `--dist loadgroup` runs all of a fixture's users on one worker."""
  if not config.pluginmanager.hasplugin("xdist"):
    return
  for item, names in fixture_groups(items).items():
    for name in sorted(set(names) - _group_names(item)):
      item.add_marker(pytest.mark.xdist_group(name))


class _GroupSuffix:
  """Runs after xdist's own hook on a worker under loadgroup: writes the
  `@<group>` node id suffix that xdist's scheduler reads where xdist's write
  did not take."""

  @pytest.hookimpl(trylast=True)
  def pytest_collection_modifyitems(self, config, items):
    del config
    for item in items:
      names = _group_names(item)
      if not names:
        continue
      suffix = "@" + "_".join(sorted(names))
      if item.nodeid.endswith(suffix):
        continue  # xdist's write took
      nodeid = item.nodeid + suffix
      if hasattr(item, "_id"):
        from _pytest.nodeid import NodeId  # pytest >= 9.2: structured node ids
        item._id = NodeId.parse(nodeid)
      else:
        item._nodeid = nodeid


def pytest_configure(config):
  if getattr(config.option, "loadgroup", False):  # set on xdist workers only
    config.pluginmanager.register(_GroupSuffix(), "soundlm-xdist-group-suffix")
