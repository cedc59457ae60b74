"""PyTorch reference for `skyscribe bench --clip-step`: the time of one contrastive CLIP training
step — ViT-B/32 shapes (transformers' CLIPConfig defaults, openai/clip-vit-base-patch32's),
fresh random weights, all trained; random pixels and random 77-token texts closed by the end
token; CLIP's symmetric InfoNCE (`return_loss=True`), AdamW (weight decay 0.1, lr 1e-5).

    python scripts/bench/bench_clip_step.py --threads 2 --batch-size 32 --steps 3

Prints one JSON line with the median step time and its parts. Needs torch and transformers
(scripts/reference/requirements-reference.txt).
"""
import argparse

import torch
from transformers import CLIPConfig, CLIPModel

from bench_common import print_steps, time_steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    config = CLIPConfig()
    model = CLIPModel(config).train()  # CLIP's dropout is 0: train mode changes nothing else
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    vocab = config.text_config.vocab_size
    ctx = config.text_config.max_position_embeddings
    size = config.vision_config.image_size

    def make_batch():
        ids = torch.randint(0, vocab - 1, (a.batch_size, ctx))
        ids[:, -1] = vocab - 1
        return torch.rand(a.batch_size, 3, size, size) * 2 - 1, ids

    times = time_steps(a.steps, make_batch,
                       lambda b: model(input_ids=b[1], pixel_values=b[0], return_loss=True).loss, opt)
    print_steps("torch %s CLIP ViT-B/32 contrastive step, all weights trained" % torch.__version__,
                times, batch_size=a.batch_size, threads=a.threads)


if __name__ == "__main__":
    main()
