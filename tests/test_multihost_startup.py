"""When `jax.distributed.initialize()` is called, and with what (pure logic:
no cluster, no TPU needed)."""
import pytest

from soundlm.partitioning import distributed_settings


def test_single_host_without_any_sign_of_a_cluster():
  assert distributed_settings({}) is None
  assert distributed_settings({"SLURM_NTASKS": "1", "TPU_WORKER_HOSTNAMES": "localhost"}) is None


@pytest.mark.parametrize("environ,on_tpu_vm", [
    ({}, True),  # a gcloud TPU VM: JAX reads the workers from the metadata server
    ({"SLURM_NTASKS": "4"}, False),
    ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, False),
])
def test_detected_clusters_let_jax_find_the_processes(environ, on_tpu_vm):
  assert distributed_settings(environ, on_cloud_tpu_vm=on_tpu_vm) == {}


def test_multihost_flag_forces_or_skips_initialization():
  assert distributed_settings({}, multihost=True) == {}
  assert distributed_settings({"SLURM_NTASKS": "4"}, multihost=False) is None
  assert distributed_settings({}, multihost=False, on_cloud_tpu_vm=True) is None


def test_explicit_coordinator_from_flags_or_environment():
  environ = {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234", "JAX_NUM_PROCESSES": "4",
             "JAX_PROCESS_ID": "3"}
  assert distributed_settings(environ) == {
      "coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3}
  assert distributed_settings(environ, coordinator_address="h:1", num_processes=2,
                              process_id=0) == {
      "coordinator_address": "h:1", "num_processes": 2, "process_id": 0}
  assert distributed_settings({"JAX_COORDINATOR_ADDRESS": "h:1"}) == {"coordinator_address": "h:1"}


def test_process_id_without_a_coordinator_is_refused():
  with pytest.raises(ValueError, match="coordinator address"):
    distributed_settings({}, num_processes=2, process_id=1)
