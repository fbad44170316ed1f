"""Devices, the one-axis data mesh, and multi-host start.

One mesh axis `data` spans every device of every host. Batches carry `NamedSharding(mesh, P('data'))`
and parameters are replicated. Each host feeds and reads only its own rows (`to_global` / `to_local`),
so no host waits on another's input or output.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxaug.errors import UserError


def initialize(coordinator: str = "", num_processes: int = 0, process_id: int = -1):
  """Starts jax.distributed when this is a multi-process run; a no-op for one process.

  With a coordinator address given, the three values are used as they are (launch/local.sh). Otherwise,
  where JAXAUG_DISTRIBUTED=1 (launch/tpu_pod.sh, launch/slurm_gpu.sbatch), inside a multi-task srun step,
  or with JAX_COORDINATOR_ADDRESS set, jax.distributed finds them itself (TPU pod metadata, SLURM).
  """
  if coordinator:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise UserError(f"multi-process start needs num_processes >= 1 and 0 <= process_id < num_processes, got "
                      f"{num_processes} and {process_id}")
    _cpu_collectives()
    jax.distributed.initialize(coordinator, num_processes, process_id)
  elif _multi_process_environment():
    _cpu_collectives()
    jax.distributed.initialize()


def _cpu_collectives():
  # CPU processes need a collectives backend for the barrier and host gathers (GPU/TPU have their own).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")


def _multi_process_environment() -> bool:
  if os.environ.get("JAXAUG_DISTRIBUTED") == "1" or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in os.environ


def data_mesh() -> Mesh:
  # Auto axes: XLA propagates shardings through the model (Explicit axes would need annotations on every gather).
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def local_batch(per_device: int) -> int:
  """Rows this host feeds per step."""
  return per_device * jax.local_device_count()


def to_global(mesh: Mesh, tree):
  """This host's rows (numpy, leading axis = local batch) -> global arrays sharded over `data`."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def to_local(tree):
  """Global batch arrays -> this host's rows as numpy, in the order `to_global` took them."""

  def local(x):
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])

  return jax.tree.map(local, tree)


# ---------------------------------------------------------------------------
# Agreement between hosts (all no-ops on one process): generation, scoring and training use these.


def _gathered(value) -> np.ndarray:
  from jax.experimental import multihost_utils

  return multihost_utils.process_allgather(np.array([value]))


def barrier(name: str) -> None:
  """Waits until every host reaches the barrier of this name."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def leave() -> None:
  """Leaves a multi-process job before exiting early (a signal's stop): process 0 hosts jax's coordination
  service, so if it exited first, a host still inside one of orbax's finishing barriers would abort with a
  traceback. jax.distributed.shutdown waits until every process has left. The run is over and its checkpoint
  committed, so a failure to leave (another host already gone) is a warning, not the run's last word."""
  if jax.process_count() > 1:
    try:
      jax.distributed.shutdown()
    except Exception as e:  # noqa: BLE001 (jax raises its runtime errors under several types)
      logging.warning("leaving the multi-process job failed (%s); exiting anyway", e)


def max_over_hosts(value: int) -> int:
  return value if jax.process_count() == 1 else int(np.max(_gathered(value)))


def sum_over_hosts(value: int) -> int:
  return value if jax.process_count() == 1 else int(np.sum(_gathered(value)))


def on_every_host(ok: bool) -> bool:
  """True only where `ok` holds on every host."""
  return ok if jax.process_count() == 1 else bool(np.all(_gathered(ok)))
