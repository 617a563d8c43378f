"""The suite's distribution (tests/conftest.py): under `-n 2 --dist loadgroup`
every shared fixture is built once and all of its users run on one worker.

A small suite of its own runs in a subprocess with a copy of this conftest:
a module fixture with several users, a conftest session fixture used by two
files, an explicit `xdist_group` and plenty of independent tests."""
import collections
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

RECORD = textwrap.dedent("""\
    import os

    def record(kind, name):
      with open(os.path.join(os.environ["GROUPS_LOG"], os.environ["PYTEST_XDIST_WORKER"]),
                "a") as f:
        f.write(f"{kind} {name}\\n")
    """)

FILES = {
    "record.py": RECORD,
    "test_module_fixture.py": """\
        import pytest
        from record import record

        @pytest.fixture(scope="module")
        def trained():
          record("build", "trained")

        @pytest.mark.parametrize("i", range(6))
        def test_uses_it(trained, i):
          record("test", f"trained{i}")

        @pytest.mark.parametrize("i", range(6))
        def test_independent(i):
          record("test", f"free{i}")
        """,
    "test_session_a.py": """\
        import pytest
        from record import record

        @pytest.mark.parametrize("i", range(3))
        def test_a(shared_model, i):
          record("test", f"shared_a{i}")

        @pytest.mark.parametrize("i", range(4))
        def test_independent(i):
          record("test", f"free_a{i}")
        """,
    "test_session_b.py": """\
        import pytest
        from record import record

        @pytest.mark.parametrize("i", range(3))
        def test_b(shared_model, i):
          record("test", f"shared_b{i}")
        """,
    "test_explicit.py": """\
        import pytest
        from record import record

        pytestmark = pytest.mark.xdist_group("pipeline")

        @pytest.fixture(scope="module")
        def pipeline():
          record("build", "pipeline")

        @pytest.mark.parametrize("i", range(4))
        def test_pipeline(pipeline, i):
          record("test", f"pipeline{i}")

        def test_also_in_the_group():
          record("test", "pipeline_plain")
        """,
}

SESSION_FIXTURE = textwrap.dedent("""\


    @pytest.fixture(scope="session")
    def shared_model():
      from record import record
      record("build", "shared_model")
    """)


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
  """{worker: [(kind, name), ...]} and the run's output."""
  root = tmp_path_factory.mktemp("suite")
  (root / "pytest.ini").write_text("[pytest]\n")
  conftest = (pathlib.Path(__file__).parent / "conftest.py").read_text()
  (root / "conftest.py").write_text(conftest + SESSION_FIXTURE)
  for name, text in FILES.items():
    (root / name).write_text(textwrap.dedent(text))
  log = root / "log"
  log.mkdir()
  env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
  env.update(GROUPS_LOG=str(log), PYTHONPATH=str(root))
  run = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup",
                        "-p", "no:cacheprovider", "-v", str(root)],
                       cwd=root, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stdout + run.stderr
  shutil.rmtree(root / "__pycache__", ignore_errors=True)
  return {worker.name: [tuple(line.split()) for line in worker.read_text().splitlines()]
          for worker in log.iterdir()}, run.stdout


def _workers(distributed, prefix):
  events, _ = distributed
  return {worker for worker, records in events.items()
          for kind, name in records if kind == "test" and name.startswith(prefix)}


def test_each_shared_fixture_is_built_once(distributed):
  events, _ = distributed
  builds = collections.Counter(name for records in events.values()
                               for kind, name in records if kind == "build")
  assert builds == {"trained": 1, "shared_model": 1, "pipeline": 1}, events


def test_a_fixtures_users_run_on_one_worker(distributed):
  events, output = distributed
  assert len(events) == 2, output  # both workers took part
  for prefix in ("trained", "shared_", "pipeline"):
    assert len(_workers(distributed, prefix)) == 1, (prefix, events)
  # The groups travel to the scheduler as xdist's node id suffix.
  assert "test_module_fixture.py::test_uses_it[0]@test_module_fixture.trained" in output
  assert "test_session_b.py::test_b[0]@shared_model" in output
  assert "test_explicit.py::test_also_in_the_group@pipeline" in output
  assert "test_module_fixture.py::test_independent[0] " in output  # not grouped
