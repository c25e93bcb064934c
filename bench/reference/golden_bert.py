#!/usr/bin/env python3
"""PyTorch reference for topa's training numerics (issue 4).

A tiny random BERT (post-LN, exact GELU, per-layer head counts and FFN widths as topa allows),
a mean-pooled linear classification head and softmax cross-entropy, written out explicitly in
torch (no transformers/peft: Debian's python3-torch 1.13 is all this needs). For full
fine-tuning and for LoRA (q, v, attention output, FFN in, FFN out; LayerNorm and head trained)
it records the loss, the gradient of every trainable parameter and the losses over 5 AdamW steps
(torch.optim.AdamW, weight decay 0.01 except biases and LayerNorm, constant lr), in float64.

    python3 bench/reference/golden_bert.py java/src/test/resources/golden/bert_golden.json

The Java test GoldenTest reads that file and holds topa to it (relative error <= 1e-4).
"""
import json
import math
import sys

import torch

torch.manual_seed(1234)
DT = torch.float64

CFG = dict(vocab=23, hidden=16, max_pos=9, types=2, head_dim=4, heads=[4, 3], ffn=[32, 24], eps=1e-6,
           lora_rank=2, lora_alpha=3.0, lora_targets=["query", "value", "attention.output", "intermediate", "output"])
B, S, LENGTHS = 3, 7, [7, 5, 3]
LR, WD, STEPS = 1e-3, 0.01, 5


def rand(*shape, scale=0.5):
    return ((torch.rand(*shape, dtype=DT) - 0.5) * scale).requires_grad_(False)


def make_params():
    c, p = CFG["hidden"], {}
    p["embeddings.word_embeddings.weight"] = rand(CFG["vocab"], c)
    p["embeddings.position_embeddings.weight"] = rand(CFG["max_pos"], c)
    p["embeddings.token_type_embeddings.weight"] = rand(CFG["types"], c)
    p["embeddings.LayerNorm.weight"] = 0.8 + 0.4 * torch.rand(c, dtype=DT)
    p["embeddings.LayerNorm.bias"] = rand(c)
    for l, (h, f) in enumerate(zip(CFG["heads"], CFG["ffn"])):
        a, n = h * CFG["head_dim"], f"encoder.layer.{l}."
        for m in ["query", "key", "value"]:
            p[n + f"attention.self.{m}.weight"] = rand(a, c)
            p[n + f"attention.self.{m}.bias"] = rand(a)
        p[n + "attention.output.dense.weight"] = rand(c, a)
        p[n + "attention.output.dense.bias"] = rand(c)
        p[n + "attention.output.LayerNorm.weight"] = 0.8 + 0.4 * torch.rand(c, dtype=DT)
        p[n + "attention.output.LayerNorm.bias"] = rand(c)
        p[n + "intermediate.dense.weight"] = rand(f, c)
        p[n + "intermediate.dense.bias"] = rand(f)
        p[n + "output.dense.weight"] = rand(c, f)
        p[n + "output.dense.bias"] = rand(c)
        p[n + "output.LayerNorm.weight"] = 0.8 + 0.4 * torch.rand(c, dtype=DT)
        p[n + "output.LayerNorm.bias"] = rand(c)
    p["head.weight"] = rand(2, c)
    p["head.bias"] = rand(2)
    return p


MODULES = {"query": "attention.self.query", "value": "attention.self.value", "key": "attention.self.key",
           "attention.output": "attention.output.dense", "intermediate": "intermediate.dense", "output": "output.dense"}


def make_lora(p):
    lora = {}
    for l in range(len(CFG["heads"])):
        for t in CFG["lora_targets"]:
            w = p[f"encoder.layer.{l}.{MODULES[t]}.weight"]
            out, inp = w.shape
            n = f"encoder.layer.{l}.{MODULES[t]}"
            lora[n + ".lora_A"] = rand(CFG["lora_rank"], inp)
            lora[n + ".lora_B"] = rand(out, CFG["lora_rank"])  # non-zero, so dA is not trivially 0
    return lora


def linear(p, lora, n, x, bias=True):
    y = x @ p[n + ".weight"].T
    if bias:
        y = y + p[n + ".bias"]
    if n + ".lora_A" in lora:
        s = CFG["lora_alpha"] / CFG["lora_rank"]
        y = y + s * (x @ lora[n + ".lora_A"].T) @ lora[n + ".lora_B"].T
    return y


def forward(p, lora, ids, types, mask):
    ln = lambda x, n: torch.nn.functional.layer_norm(x, x.shape[-1:], p[n + ".weight"], p[n + ".bias"], CFG["eps"])
    pos = torch.arange(S)
    x = p["embeddings.word_embeddings.weight"][ids] + p["embeddings.position_embeddings.weight"][pos] \
        + p["embeddings.token_type_embeddings.weight"][types]
    x = ln(x, "embeddings.LayerNorm")
    keep = mask[:, None, None, :].bool()
    for l, h in enumerate(CFG["heads"]):
        n, d = f"encoder.layer.{l}.", CFG["head_dim"]
        split = lambda t: t.view(B, S, h, d).transpose(1, 2)
        q = split(linear(p, lora, n + "attention.self.query", x))
        k = split(linear(p, lora, n + "attention.self.key", x))
        v = split(linear(p, lora, n + "attention.self.value", x))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        probs = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(B, S, h * d)
        h1 = ln(linear(p, lora, n + "attention.output.dense", ctx) + x, n + "attention.output.LayerNorm")
        act = torch.nn.functional.gelu(linear(p, lora, n + "intermediate.dense", h1))
        x = ln(linear(p, lora, n + "output.dense", act) + h1, n + "output.LayerNorm")
    m = mask[:, :, None].to(DT)
    pooled = (x * m).sum(1) / m.sum(1)
    return pooled @ p["head.weight"].T + p["head.bias"]


def run(p, lora, trainable, ids, types, mask, labels):
    params = {k: v.clone().requires_grad_(k in trainable) for k, v in {**p, **lora}.items()}
    base = {k: v for k, v in params.items() if k in p}
    adapters = {k: v for k, v in params.items() if k in lora}
    loss = torch.nn.functional.cross_entropy(forward(base, adapters, ids, types, mask), labels)
    loss.backward()
    grads = {k: v.grad.clone() for k, v in params.items() if k in trainable}
    for v in params.values():
        v.grad = None
    decay = [v for k, v in params.items() if k in trainable and not (k.endswith("bias") or "LayerNorm" in k)]
    nodecay = [v for k, v in params.items() if k in trainable and (k.endswith("bias") or "LayerNorm" in k)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        l = torch.nn.functional.cross_entropy(forward(base, adapters, ids, types, mask), labels)
        losses.append(l.item())
        l.backward()
        opt.step()
    return {"loss": loss.item(), "grads": {k: flat(v) for k, v in grads.items()}, "losses": losses}


def flat(t):
    return {"shape": list(t.shape), "data": [float(x) for x in t.detach().reshape(-1).tolist()]}


def main(out):
    p, ids = make_params(), torch.randint(0, CFG["vocab"], (B, S))
    lora = make_lora(p)
    types = torch.tensor([[0 if t < 4 else 1 for t in range(S)] for _ in range(B)])
    mask = torch.tensor([[1 if t < n else 0 for t in range(S)] for n in LENGTHS])
    ids = ids * mask  # padding positions hold id 0, as topa pads
    types = types * mask
    labels = torch.tensor([1, 0, 1])
    full = run(p, {}, set(p), ids, types, mask, labels)
    lora_trainable = set(lora) | {k for k in p if "LayerNorm" in k or k.startswith("head.")}
    lora_run = run(p, lora, lora_trainable, ids, types, mask, labels)
    doc = {"config": CFG, "batch": B, "seq": S, "lengths": LENGTHS, "lr": LR, "weight_decay": WD, "steps": STEPS,
           "torch": torch.__version__, "ids": ids.tolist(), "types": types.tolist(), "labels": labels.tolist(),
           "params": {k: flat(v) for k, v in {**p, **lora}.items()}, "full": full, "lora": lora_run}
    with open(out, "w") as f:
        json.dump(doc, f)
    print(f"wrote {out}: full loss {full['loss']:.6f}, lora loss {lora_run['loss']:.6f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bert_golden.json")
