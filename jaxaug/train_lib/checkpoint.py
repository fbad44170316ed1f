"""Orbax checkpoints of a training run: the TrainState (replicated arrays) and each host's input state.

A step directory holds `state/` (parameters, batch statistics, optimizer state, step, RNG) and
`input/process_<i>-of-<n>.json` (that host's grain iterator state, as grain's own orbax handler
lays it out). Orbax commits a step atomically, so after a kill `latest_step` is a complete one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class InputStateHandler(ocp.CheckpointHandler):
  """One JSON file per host with its input-stream state (captured when the save was asked for)."""

  @staticmethod
  def _file(directory) -> str:
    return os.path.join(os.fspath(directory), f"process_{jax.process_index()}-of-{jax.process_count()}.json")

  def save(self, directory, args: InputSave):
    with open(self._file(directory), "w") as f:
      json.dump(args.state, f)

  def restore(self, directory, args: InputRestore | None = None) -> dict:
    with open(self._file(directory)) as f:
      return json.load(f)


@ocp.args.register_with_handler(InputStateHandler, for_save=True)
@dataclasses.dataclass
class InputSave(ocp.args.CheckpointArgs):
  state: Any


@ocp.args.register_with_handler(InputStateHandler, for_restore=True)
@dataclasses.dataclass
class InputRestore(ocp.args.CheckpointArgs):
  pass


def manager(directory: str, keep: int = 2) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "input"))


def save(mngr: ocp.CheckpointManager, step: int, state, input_state: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), input=InputSave(input_state)))


def restore(mngr: ocp.CheckpointManager, step: int, like) -> tuple[Any, dict]:
  """(state, input state) of `step`; `like` gives the state's structure, dtypes and shardings."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                        input=InputRestore()))
  return restored["state"], restored["input"]
