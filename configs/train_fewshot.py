"""Few-shot linear probe (DA-Fusion protocol): frozen ImageNet ResNet-50, Adam on the head, swap mix p = 0.5.

    python -m jaxaug.train --config=train_fewshot:caltech101,4,embed_cutmix_dropout \
        --config.pretrained=resnet50_tv_in1k.safetensors

Argument DATASET,SHOTS,METHOD: DATASET one of caltech101, flowers102, pascal, coco; METHOD the
conditioning method whose synthetic images are used (read from out/<dataset>_<shots>shot, which
`configs/fewshot.py:DATASET,SHOTS` generates from the same k-shot subset), `txt2img` or `sdedit`
for those baselines (out/<dataset>_<shots>shot_<method>), or `real` for the real-only baseline.
50 epochs x 200 steps of 32; the paper's 4 trials are seeds 0-3 (--config.seed, --config.workdir),
and best_top1 in metrics.json is a run's best evaluation. Transform as DA-Fusion: 256 px, flip,
rotation +-15 degrees (the host fits a centred square where DA-Fusion resized without keeping aspect).
Fields are explained in jaxaug/config_base.py (training_config).
"""

from jaxaug.config_base import training_config

DATASETS = {  # name -> (TFDS spec, evaluation split)
    "caltech101": ("tfds:caltech101", "test"),
    "flowers102": ("tfds:oxford_flowers102", "test"),
    "pascal": ("tfds:voc/2007", "test"),
    "coco": ("tfds:coco/2017", "validation"),
}
BASELINES = ("txt2img", "sdedit")  # other papers' generation, see configs/fewshot.py


def get_config(arg: str = "caltech101,4,embed_cutmix_dropout"):
  parts = arg.split(",")
  if len(parts) != 3 or parts[0] not in DATASETS or not parts[1].isdigit():
    raise ValueError(f"train_fewshot.py takes DATASET,SHOTS,METHOD with DATASET in {', '.join(DATASETS)}, got {arg!r}")
  dataset, shots, method = parts[0], int(parts[1]), parts[2]
  c = training_config()
  c.workdir = f"out/train_fewshot/{dataset}_{shots}shot_{method}"
  c.real, c.eval_split = DATASETS[dataset]
  c.shots = shots
  c.synthetic = f"out/{dataset}_{shots}shot"
  c.synthetic_method = method
  if method == "real":
    c.synthetic, c.synthetic_method = "", ""
  elif method in BASELINES:  # configs/fewshot.py writes these to a directory of their own
    c.synthetic, c.synthetic_method = f"out/{dataset}_{shots}shot_{method}", ""
  c.mix = "swap"  # each real sample swapped for a synthetic one of its class with probability 0.5
  c.load_size, c.crop_size = 256, 256
  c.transform = "flip_rotate"  # DA-Fusion: resize 256, flip, rotation +-15 degrees
  c.model = "resnet50"
  c.linear_probe = True
  c.loss = "cross_entropy"
  c.optimizer, c.lr, c.weight_decay, c.warmup_epochs = "adam", 1e-4, 0.0, 0.0
  c.batch_size, c.eval_batch_size = 32, 256
  c.epochs, c.steps_per_epoch = 50, 200
  c.log_every, c.eval_every, c.checkpoint_every = 50, 200, 1000
  return c
