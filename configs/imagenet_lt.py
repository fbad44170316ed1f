"""ImageNet-LT with the paper's settings: fill every class to 1,280 images (1,164,154 synthetic).

    python -m jaxaug.generate --config=imagenet_lt \
        --config.data.source='imagenet_lt:/data/ImageNet_LT?root=/data/imagenet&names=/data/LOC_synset_mapping.txt' \
        --config.model=sd2-community/stable-diffusion-2-1-unclip --config.output.dir=/data/synthetic/imagenet_lt

SD 2.1-unCLIP, PNDM, 30 steps, guidance 2.0, noise level 0, embed_cutmix_dropout (the best method on
ImageNet-LT), 768 px, and the raw class-name string as the prompt ("tench, Tinca tinca"): give a
wnid -> name file with names=. The source needs ImageNet_LT_{train,val,test}.txt and an ImageNet tree.
"""

from jaxaug.config_base import generation_config


def get_config():
  c = generation_config()
  c.model = "sd2-community/stable-diffusion-2-1-unclip"
  c.methods = "embed_cutmix_dropout"
  c.prompt = "{}"
  c.resolution = 768
  c.data.source = "imagenet_lt:/data/ImageNet_LT?root=/data/imagenet"
  c.data.split = "train"
  c.plan.policy = "fill_to"
  c.plan.amount = 1280
  c.sampler.scheduler = "pndm"
  c.sampler.steps = 30
  c.sampler.guidance = 2.0
  c.output.dir = "out/imagenet_lt"
  return c
