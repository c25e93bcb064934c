#!/usr/bin/env python3
"""PyTorch CPU baseline for bench/train.sh: one training step of a MiniLM-L6-shaped BERT (hidden 384,
12 heads, FFN 1536, 6 layers, random weights: time does not depend on their values) with a
mean-pooled linear head, batch 32 x seq 128, AdamW; full fine-tuning or LoRA (r 8, alpha 16 on all
six linears, LayerNorm and head trained, base weights frozen). Eager torch, as a PEFT user runs it.
Prints `<method>_pytorch_step_seconds` (median after 2 warm-up steps) and
`<method>_pytorch_peak_rss_mib`. `full-bf16` and `lora-bf16` run the step under
torch.autocast("cpu", bfloat16): oneDNN's bf16 kernels (AMX tiles where the CPU has them), fp32
master weights and optimizer, as a PyTorch user turns mixed precision on.

    python3 train_step.py full|lora|full-bf16|lora-bf16 [steps]
"""
import math
import resource
import sys
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)
H, HEADS, FFN, LAYERS, VOCAB, B, S, R, ALPHA = 384, 12, 1536, 6, 30522, 32, 128, 8, 16.0


class Lora(torch.nn.Module):
    def __init__(self, base, lora):
        super().__init__()
        self.base = base
        self.lora = lora
        if lora:
            base.weight.requires_grad_(False)
            self.a = torch.nn.Parameter(torch.randn(R, base.in_features) / math.sqrt(base.in_features))
            self.b = torch.nn.Parameter(torch.zeros(base.out_features, R))

    def forward(self, x):
        y = self.base(x)
        return y + (ALPHA / R) * (x @ self.a.T) @ self.b.T if self.lora else y


class Layer(torch.nn.Module):
    def __init__(self, lora):
        super().__init__()
        self.q, self.k, self.v, self.o = (Lora(torch.nn.Linear(H, H), lora) for _ in range(4))
        self.ln1, self.ln2 = torch.nn.LayerNorm(H, eps=1e-12), torch.nn.LayerNorm(H, eps=1e-12)
        self.fi, self.fo = Lora(torch.nn.Linear(H, FFN), lora), Lora(torch.nn.Linear(FFN, H), lora)

    def forward(self, x, bias):
        split = lambda t: t.view(B, S, HEADS, H // HEADS).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(H // HEADS) + bias, dim=-1)
        h1 = self.ln1(self.o((p @ v).transpose(1, 2).reshape(B, S, H)) + x)
        return self.ln2(self.fo(torch.nn.functional.gelu(self.fi(h1))) + h1)


class Model(torch.nn.Module):
    def __init__(self, lora):
        super().__init__()
        self.wte, self.wpe, self.wtt = torch.nn.Embedding(VOCAB, H), torch.nn.Embedding(512, H), torch.nn.Embedding(2, H)
        self.ln = torch.nn.LayerNorm(H, eps=1e-12)
        self.layers = torch.nn.ModuleList(Layer(lora) for _ in range(LAYERS))
        self.head = torch.nn.Linear(H, 2)
        if lora:
            for p in [self.wte.weight, self.wpe.weight, self.wtt.weight]:
                p.requires_grad_(False)
            for l in self.layers:
                for lin in [l.q, l.k, l.v, l.o, l.fi, l.fo]:
                    lin.base.bias.requires_grad_(False)

    def forward(self, ids, mask):
        x = self.ln(self.wte(ids) + self.wpe(torch.arange(S)) + self.wtt(torch.zeros_like(ids)))
        bias = (1.0 - mask[:, None, None, :].float()) * -1e30
        for l in self.layers:
            x = l(x, bias)
        m = mask[:, :, None].float()
        return self.head((x * m).sum(1) / m.sum(1))


def main(method, steps):
    model = Model(method.startswith("lora"))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=method.endswith("-bf16"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    ids = torch.randint(1000, 30000, (B, S))
    mask = torch.ones(B, S, dtype=torch.long)
    labels = torch.arange(B) % 2
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad()
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(f"{method}_pytorch_trainable_parameters: {sum(p.numel() for p in params)}")
    print(f"{method}_pytorch_step_seconds: {times[len(times) // 2]:.3f}")
    print(f"{method}_pytorch_peak_rss_mib: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5)
