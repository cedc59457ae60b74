"""PyTorch reference for `skyscribe bench --clip-step`: the time of one contrastive CLIP training
step — ViT-B/32 shapes (transformers' CLIPConfig defaults, openai/clip-vit-base-patch32's),
fresh random weights, all trained; random pixels and random 77-token texts closed by the end
token; CLIP's symmetric InfoNCE (`return_loss=True`), AdamW (weight decay 0.1, lr 1e-5).

    python scripts/bench_clip_step.py --threads 2 --batch-size 32 --steps 3

Prints one JSON line with the median step time and its parts. Needs torch and transformers
(scripts/requirements-reference.txt).
"""
import argparse
import json
import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel


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
    times = []
    for step in range(a.steps + 1):
        pixels = torch.rand(a.batch_size, 3, size, size) * 2 - 1
        ids = torch.randint(0, vocab - 1, (a.batch_size, ctx))
        ids[:, -1] = vocab - 1
        start = time.perf_counter()
        loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        loss.item()
        forward = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        backward = time.perf_counter()
        opt.step()
        end = time.perf_counter()
        if step > 0:
            times.append((end - start, forward - start, backward - forward, end - backward))
    print(json.dumps({
        "what": "torch %s CLIP ViT-B/32 contrastive step, all weights trained" % torch.__version__,
        "batch_size": a.batch_size,
        "threads": a.threads,
        "median_step_s": statistics.median(t[0] for t in times),
        "median_forward_s": statistics.median(t[1] for t in times),
        "median_backward_s": statistics.median(t[2] for t in times),
        "median_optimizer_s": statistics.median(t[3] for t in times),
        "steps": a.steps,
    }))


if __name__ == "__main__":
    main()
