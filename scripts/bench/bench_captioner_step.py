"""PyTorch reference for `skyscribe bench --captioner-step`: the time of one ClipCap training
step (MLP mapper, gpt2 124M shapes with random weights, frozen unless --train-gpt2), the
reference's loss (logits at positions K-1..K+T-2 against the T caption tokens), AdamW.

    python scripts/bench/bench_captioner_step.py --threads 2 --batch-size 40 --caption-tokens 20

Prints one JSON line with the median step time. Needs torch and transformers
(scripts/reference/requirements-reference.txt).
"""
import argparse

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from bench_common import print_steps, time_steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=40)
    ap.add_argument("--caption-tokens", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--train-gpt2", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config())  # gpt2's shapes, random weights
    gpt.eval()  # no dropout: skyscribe trains without it, so both do the same arithmetic
    for p in gpt.parameters():
        p.requires_grad_(a.train_gpt2)
    k, e = 10, gpt.config.n_embd
    mapper = nn.Sequential(nn.Linear(512, e * k // 2), nn.Tanh(), nn.Linear(e * k // 2, e * k))
    params = list(mapper.parameters()) + ([p for p in gpt.parameters()] if a.train_gpt2 else [])
    opt = torch.optim.AdamW(params, lr=1e-5)

    def make_batch():
        return (torch.rand(a.batch_size, 512) - 0.5,
                torch.randint(0, 50257, (a.batch_size, a.caption_tokens)))

    def loss_of(batch):
        emb, tokens = batch
        prefix = mapper(emb).view(a.batch_size, k, e)
        x = torch.cat([prefix, gpt.transformer.wte(tokens)], dim=1)
        logits = gpt(inputs_embeds=x).logits[:, k - 1 : -1]
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.flatten())

    times = time_steps(a.steps, make_batch, loss_of, opt)
    print_steps("torch %s ClipCap step, MLP mapper, gpt2 124M %s" % (
                    torch.__version__, "trained" if a.train_gpt2 else "frozen"),
                times, batch_size=a.batch_size, caption_tokens=a.caption_tokens, threads=a.threads)


if __name__ == "__main__":
    main()
