"""Few-shot linear probe (DA-Fusion protocol): frozen ImageNet ResNet-50, Adam on the head, swap mix p = 0.5.

    python -m jaxaug.train --config=configs/train_fewshot.py:caltech101,4,embed_cutmix_dropout \
        --config.pretrained=resnet50_tv_in1k.safetensors

Argument DATASET,SHOTS,METHOD: DATASET one of caltech101, flowers102, pascal, coco; METHOD the
conditioning method whose synthetic images are used (read from out/<dataset>_<shots>shot, which
`configs/fewshot.py:DATASET,SHOTS` generates from the same k-shot subset), `txt2img` or `sdedit`
for those baselines (out/<dataset>_<shots>shot_<method>), or `real` for the real-only baseline.
50 epochs x 200 steps of 32; the paper's 4 trials are seeds 0-3 (--config.seed, --config.workdir),
and best_top1 in metrics.json is a run's best evaluation. The paper's transform was resize 256,
flip and rotation +-15 degrees; this uses the shared one (random resized crop, flip, colour jitter).
Fields are explained in train_demo.py.
"""

import ml_collections

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
  spec, eval_split = DATASETS[dataset]
  c = ml_collections.ConfigDict()
  c.workdir = f"out/train_fewshot/{dataset}_{shots}shot_{method}"

  # Data. Spec strings are described in jaxaug/data/sources.py.
  c.real = spec
  c.train_split = "train"
  c.eval_split = eval_split
  c.shots = shots
  c.shots_seed = 0
  c.synthetic = f"out/{dataset}_{shots}shot"
  c.synthetic_method = method
  if method == "real":
    c.synthetic, c.synthetic_method = "", ""
  elif method in BASELINES:  # configs/fewshot.py writes these to a directory of their own
    c.synthetic, c.synthetic_method = f"out/{dataset}_{shots}shot_{method}", ""
  c.mix = "swap"
  c.synthetic_fraction = 0.5
  c.load_size = 256
  c.crop_size = 224
  c.augment = True  # random resized crop, flip, colour jitter 0.4 on the device (off: centre crop)

  # Model and loss.
  c.model = "resnet50"
  c.pretrained = ""  # torchvision/timm .safetensors with the backbone's ImageNet weights
  c.linear_probe = True
  c.loss = "cross_entropy"
  c.label_smoothing = 0.0

  # Optimizer: sgd (momentum, weight decay, warmup then cosine to 0) | adam (constant rate).
  c.optimizer = "adam"
  c.lr = 1e-4
  c.momentum = 0.9
  c.weight_decay = 0.0
  c.warmup_epochs = 0.0
  c.batch_size = 32  # global, over all devices of all hosts
  c.eval_batch_size = 256
  c.epochs = 50
  c.steps_per_epoch = 200

  c.seed = 0
  c.log_every = 50
  c.eval_every = 200
  c.checkpoint_every = 1000
  c.num_threads = 4  # image-decoding threads per host
  c.num_workers = 0  # grain worker processes per host (a resumed run needs the same number)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.coordinator = ""  # host:port for a local multi-process run; empty: automatic (TPU pod, SLURM)
  c.mesh.num_processes = 0
  c.mesh.process_id = -1
  return c
