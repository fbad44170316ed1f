"""What a launcher starts, run as `python -m tests.launch_probe OUT_DIR [flags...]` in place of a jaxaug entry
point: each process joins the job as the entry points do (mesh.initialize) and writes its rank, the process count
and the flags it received to OUT_DIR/rank-N.json. Tests a launcher's own part without a generation run."""

import json
import sys
from pathlib import Path

import jax

from jaxaug import mesh

if __name__ == "__main__":
  mesh.initialize()
  out = Path(sys.argv[1])
  out.mkdir(parents=True, exist_ok=True)
  (out / f"rank-{jax.process_index()}.json").write_text(json.dumps(
      {"process": jax.process_index(), "processes": jax.process_count(), "argv": sys.argv[2:]}))
