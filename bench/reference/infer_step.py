#!/usr/bin/env python3
"""PyTorch CPU inference baseline for bench/infer.sh: the MiniLM-L6-shaped encoder of train_step.py
(random weights) under torch.no_grad at batch 32 x seq 128, in fp32 and under
torch.autocast("cpu", bfloat16) (oneDNN's bf16 kernels, AMX where the CPU has them). Prints
`infer_b32_s128_pytorch_seq_per_s` and `infer_b32_s128_pytorch_bf16_seq_per_s` (medians after 3
warm-up batches).

    python3 infer_step.py [iterations]
"""
import sys
import time

import torch

from train_step import B, S, Model


def rate(model, ids, mask, bf16, iterations):
    times = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(iterations + 3):
            t0 = time.perf_counter()
            model(ids, mask)
            if i >= 3:
                times.append(time.perf_counter() - t0)
    times.sort()
    return B / times[len(times) // 2]


def main(iterations):
    model = Model(False).eval()
    ids = torch.randint(1000, 30000, (B, S))
    mask = torch.ones(B, S, dtype=torch.long)
    print(f"infer_b32_s128_pytorch_seq_per_s: {rate(model, ids, mask, False, iterations):.1f}")
    print(f"infer_b32_s128_pytorch_bf16_seq_per_s: {rate(model, ids, mask, True, iterations):.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
