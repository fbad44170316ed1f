"""One process of a multi-process batched training group, for tests/test_experiment_multirun.py:

  python tests/multirun_probe.py OUT SYNTHETIC COORDINATOR NUM_PROCESSES PROCESS_ID

joins the job as the entry points do (mesh.initialize), trains test_experiment_multirun's RUNS as one group
(multirun.train_group) into OUT, and process 0 writes their final metrics to OUT/results.json."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the test modules whose configs this shares

from jaxaug import mesh  # noqa: E402
from jaxaug.train_lib import loop, multirun  # noqa: E402

if __name__ == "__main__":
  out, syn, coordinator, processes, rank = sys.argv[1:6]
  mesh.initialize(coordinator, int(processes), int(rank))
  import jax

  from test_experiment_multirun import RUNS, _config

  out = Path(out)
  runs = [multirun.Run(c, loop.open_data(c)) for c in (_config(out / f"run{s}", syn, s, m) for s, m in RUNS)]
  results = multirun.train_group(runs, multirun.Programs(), out / "group", quiet=True)
  if jax.process_index() == 0:
    (out / "results.json").write_text(json.dumps({"processes": jax.process_count(), "devices": jax.device_count(),
                                                  "results": results}))
