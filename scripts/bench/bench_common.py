"""What the Python reference benchmarks share, so that each measures the same way: the image
pipeline's options and its two timings (end to end, model only), and the training-step timing
loop with its JSON report. Imported by the bench_*.py scripts beside it (Python puts a script's
own folder on the import path, so each still runs alone from anywhere).
"""
import glob
import json
import os
import statistics
import time


def add_image_args(ap, batch_size=32):
    """The image pipeline's options, with skyscribe bench's defaults."""
    ap.add_argument("--images", default=os.path.join(os.path.dirname(__file__), "../../../shared/data/eurosat/images/Forest"))
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--threads", type=int, default=2)


def image_paths(args):
    return sorted(glob.glob(os.path.join(args.images, "**", "*.jpg"), recursive=True))[: args.limit]


def time_pipeline(paths, bs, pixels, encode):
    """Images/s end to end (`pixels` decodes and preprocesses a batch of paths, `encode` runs
    the model) and for the model alone, after one warm-up batch."""
    encode(pixels(paths[:bs]))
    start = time.perf_counter()
    for i in range(0, len(paths), bs):
        encode(pixels(paths[i:i + bs]))
    end_to_end = len(paths) / (time.perf_counter() - start)
    batches = [pixels(paths[i:i + bs]) for i in range(0, len(paths), bs)]
    start = time.perf_counter()
    for b in batches:
        encode(b)
    return end_to_end, len(paths) / (time.perf_counter() - start)


def print_pipeline(header, end_to_end, model_only, unit="images"):
    what = "decode + preprocess + encode" if unit == "images" else "tokenize + encode"
    print(header)
    print(f"  end to end ({what}): {end_to_end:.1f} {unit}/s")
    print(f"  model only: {model_only:.1f} {unit}/s")


def time_steps(steps, make_batch, loss_of, opt):
    """`steps` timed training steps after one warm-up: `(whole, forward, backward, optimiser)`
    seconds each. `make_batch()` is untimed; `loss_of(batch)` is the forward pass."""
    times = []
    for step in range(steps + 1):
        batch = make_batch()
        start = time.perf_counter()
        loss = loss_of(batch)
        loss.item()
        forward = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        backward = time.perf_counter()
        opt.step()
        end = time.perf_counter()
        if step > 0:
            times.append((end - start, forward - start, backward - forward, end - backward))
    return times


def print_steps(what, times, **fields):
    """One JSON line: `what`, `fields`, and the median step and its parts."""
    print(json.dumps({
        "what": what,
        **fields,
        "median_step_s": statistics.median(t[0] for t in times),
        "median_forward_s": statistics.median(t[1] for t in times),
        "median_backward_s": statistics.median(t[2] for t in times),
        "median_optimizer_s": statistics.median(t[3] for t in times),
        "steps": len(times),
    }))
