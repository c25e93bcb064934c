#!/usr/bin/env python3
"""PyTorch replay of a topa fine-tuning recipe (issue 4, bench/glue.sh).

`topa finetune ... --export-recipe DIR` writes DIR/recipe.json (hyper-parameters, task, model
shape), DIR/init.safetensors (every parameter as topa starts: pretrained encoder, fresh head, fresh
LoRA factors) and DIR/data.safetensors (tokenized train/dev sets, targets, each epoch's example
order). This script trains the same model the same way in plain torch (float32, eager): post-LN BERT
with exact GELU, mask-aware mean pooling and a linear head, LoRA as PEFT computes it, AdamW with
decoupled weight decay (none on biases and LayerNorm), linear warmup then linear decay, global-norm
clipping, and dropout whose masks come from the same counter-based hash topa uses
(native/topa_cpu.h, dev.topa.backend.Dropout), so both engines drop the same elements.

    python3 bench/reference/glue_finetune.py DIR

Prints `epoch N: <metric> <value>` per epoch and `pytorch_best_<metric>: <value>` last.
No transformers or peft: Debian's python3-torch (1.13) and numpy are all it needs.
"""
import json
import math
import struct
import sys
import time

import numpy as np
import torch

M32 = 0xFFFFFFFF


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dt = {"F32": np.float32, "I32": np.int32}[e["dtype"]]
        lo, hi = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(blob[lo:hi], dtype=dt).reshape(e["shape"]).copy())
    return out


# ---- dropout masks: the same function of (key, element index) as topa's kernels ----

def hash32_int(x):
    x &= M32
    x ^= x >> 16
    x = (x * 0x7feb352d) & M32
    x ^= x >> 15
    x = (x * 0x846ca68b) & M32
    x ^= x >> 16
    return x


def hash32(x):
    """x: int64 tensor of values in [0, 2^32); products wrap in int64, the low 32 bits are exact."""
    x = x ^ (x >> 16)
    x = (x * 0x7feb352d) & M32
    x = x ^ (x >> 15)
    x = (x * 0x846ca68b) & M32
    return x ^ (x >> 16)


def dropout_key(seed, step, site):
    s = hash32_int((seed & M32) ^ hash32_int((seed >> 32) & M32))
    return hash32_int(hash32_int(s ^ (step & M32)) ^ (site & M32))


_arange = {}


def dropout(x, p, key):
    if p <= 0:
        return x
    n = x.numel()
    if n not in _arange:
        _arange[n] = torch.arange(n, dtype=torch.int64)
    keep = (hash32(_arange[n] ^ key) >> 8) >= math.floor(p * 16777216.0)
    scale = np.float32(1.0 / (1.0 - p)).item()
    return torch.where(keep.view(x.shape), x * scale, torch.zeros((), dtype=x.dtype))


SITE_EMBEDDINGS, SITE_PROBS, SITE_ATT_OUT, SITE_FFN_OUT, SITE_LORA = 0, 0, 1, 2, 3
HEAD_SITE = 0x7FFFFFFF
QKV, ATT_OUT, FFN_IN, FFN_OUT = 0, 1, 2, 3


def site(layer, k):
    return 1 + 16 * layer + k


class Model:
    """BERT encoder + mean-pool head over a dict of parameters named as topa names them."""

    def __init__(self, cfg, params, recipe):
        self.cfg, self.p, self.r = cfg, params, recipe
        self.lora_scale = cfg["lora_scale"]
        # topa's --base-precision bf16: frozen base weights and their inputs rounded to bf16, sums in fp32
        self.bf16 = recipe.get("base_precision", "fp32") == "bf16"

    def linear(self, layer, slot, module, x, drop_lora, bias=True):
        n = f"encoder.layer.{layer}."
        p = self.p
        if slot == QKV:
            w = torch.cat([p[n + f"attention.self.{m}.weight"] for m in ("query", "key", "value")])
            b = torch.cat([p[n + f"attention.self.{m}.bias"] for m in ("query", "key", "value")])
            lora = n + "attention.self.qkv"
        else:
            w, b, lora = p[n + module + ".weight"], p.get(n + module + ".bias") if bias else None, n + module
        if self.bf16:
            y = x.bfloat16().float() @ w.detach().bfloat16().float().T
        else:
            y = x @ w.T
        if b is not None:
            y = y + b
        if lora + ".lora_A" in p:
            xl = drop_lora(x, site(layer, SITE_LORA + slot))
            y = y + self.lora_scale * ((xl @ p[lora + ".lora_A"].T) @ p[lora + ".lora_B"].T)
        return y

    def forward(self, ids, types, mask, train, step):
        cfg, p, r = self.cfg["model"], self.p, self.r
        seed = r["seed"]
        hid = r["hidden_dropout"] if train else 0.0
        att_p = r["attention_dropout"] if train else 0.0
        lora_p = r.get("lora_dropout", 0.0) if train else 0.0
        drop = lambda x, prob, s: dropout(x, prob, dropout_key(seed, step, s)) if prob > 0 else x
        drop_lora = lambda x, s: drop(x, lora_p, s)
        ln = lambda x, n: torch.nn.functional.layer_norm(x, x.shape[-1:], p[n + ".weight"], p[n + ".bias"], cfg["eps"])
        bsz, seq = ids.shape
        pos = torch.arange(seq)
        x = p["embeddings.word_embeddings.weight"][ids] + p["embeddings.position_embeddings.weight"][pos] \
            + p["embeddings.token_type_embeddings.weight"][types]
        x = drop(ln(x, "embeddings.LayerNorm"), hid, SITE_EMBEDDINGS)
        keep = mask[:, None, None, :].bool()
        d = cfg["head_dim"]
        for l, h in enumerate(cfg["heads"]):
            n = f"encoder.layer.{l}."
            a = h * d
            qkv = self.linear(l, QKV, None, x, drop_lora)
            q, k, v = (qkv[..., i * a:(i + 1) * a].reshape(bsz, seq, h, d).transpose(1, 2) for i in range(3))
            scores = (q @ k.transpose(-1, -2)) * np.float32(1 / math.sqrt(d)).item()
            probs = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
            probs = drop(probs, att_p, site(l, SITE_PROBS))
            ctx = (probs @ v).transpose(1, 2).reshape(bsz, seq, a)
            att = drop(self.linear(l, ATT_OUT, "attention.output.dense", ctx, drop_lora), hid, site(l, SITE_ATT_OUT))
            h1 = ln(att + x, n + "attention.output.LayerNorm")
            act = torch.nn.functional.gelu(self.linear(l, FFN_IN, "intermediate.dense", h1, drop_lora))
            out = drop(self.linear(l, FFN_OUT, "output.dense", act, drop_lora), hid, site(l, SITE_FFN_OUT))
            x = ln(out + h1, n + "output.LayerNorm")
        m = mask[:, :, None].to(x.dtype)
        pooled = drop((x * m).sum(1) / m.sum(1), hid, HEAD_SITE)
        return pooled @ p["head.weight"].T + p["head.bias"]


def batch(data, split, idx):
    off, ids_all, types_all = data[split + "_offsets"], data[split + "_ids"], data[split + "_types"]
    lens = [int(off[i + 1] - off[i]) for i in idx]
    seq = max(lens)
    ids = torch.zeros(len(idx), seq, dtype=torch.int64)
    types = torch.zeros(len(idx), seq, dtype=torch.int64)
    mask = torch.zeros(len(idx), seq, dtype=torch.int64)
    for row, (i, n) in enumerate(zip(idx, lens)):
        lo = int(off[i])
        ids[row, :n] = ids_all[lo:lo + n].long()
        types[row, :n] = types_all[lo:lo + n].long()
        mask[row, :n] = 1
    return ids, types, mask


def metrics(cfg, outputs, data):
    if cfg["regression"]:
        pred = outputs[:, 0].double().numpy()
        gold = data["dev_scores"].double().numpy()
        rank = lambda v: np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(np.float64)
        pearson = float(np.corrcoef(pred, gold)[0, 1])
        # average ranks for ties, as GLUE's scipy spearmanr
        def avg_rank(v):
            order = np.argsort(v, kind="stable")
            ranks = np.empty(len(v))
            sv = v[order]
            i = 0
            while i < len(v):
                j = i
                while j + 1 < len(v) and sv[j + 1] == sv[i]:
                    j += 1
                ranks[order[i:j + 1]] = (i + j) / 2.0
                i = j + 1
            return ranks
        spearman = float(np.corrcoef(avg_rank(pred), avg_rank(gold))[0, 1])
        del rank
        return {"pearson": pearson, "spearman": spearman}
    pred = outputs.argmax(1).numpy()
    gold = data["dev_labels"].numpy()
    tp = int(((pred == 1) & (gold == 1)).sum())
    tn = int(((pred == 0) & (gold == 0)).sum())
    fp = int(((pred == 1) & (gold == 0)).sum())
    fn = int(((pred == 0) & (gold == 1)).sum())
    out = {"accuracy": float((pred == gold).mean())}
    out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    out["matthews"] = (tp * tn - fp * fn) / den if den else 0.0
    return out


def main(d):
    torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))
    cfg = json.load(open(d + "/recipe.json"))
    r = cfg["recipe"]
    init = read_safetensors(d + "/init.safetensors")
    data = read_safetensors(d + "/data.safetensors")
    lora = r["method"] == "lora"
    trainable = {k for k in init if (not lora) or "lora_" in k or "LayerNorm" in k or k.startswith("head.")}
    params = {k: v.clone().requires_grad_(k in trainable) for k, v in init.items()}
    model = Model(cfg, params, r)
    decay = [v for k, v in params.items() if k in trainable and not (k.endswith("bias") or "LayerNorm" in k)]
    nodecay = [v for k, v in params.items() if k in trainable and (k.endswith("bias") or "LayerNorm" in k)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r["weight_decay"]}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=r["lr"], betas=(0.9, 0.999), eps=1e-8)
    order = data["order"]
    n, bs, epochs = order.shape[1], r["batch_size"], r["epochs"]
    steps_per_epoch = (n + bs - 1) // bs
    total = steps_per_epoch * epochs
    warmup = int(math.floor(total * r["warmup_ratio"] + 0.5))
    main_metric = cfg["main_metric"]
    qkv_b = [k for k in params if k.endswith("attention.self.qkv.lora_B")]
    step, best = 0, -math.inf
    for epoch in range(1, epochs + 1):
        t0, loss_sum = time.time(), 0.0
        perm = order[epoch - 1].tolist()
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            lr = r["lr"] * ((step + 1.0) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup)))
            ids, types, mask = batch(data, "train", idx)
            out = model.forward(ids, types, mask, True, step + 1)
            if cfg["regression"]:
                loss = ((out[:, 0] - data["train_scores"][idx]) ** 2).mean()
            else:
                loss = torch.nn.functional.cross_entropy(out, data["train_labels"][idx].long())
            if not math.isfinite(loss.item()):
                raise SystemExit(f"loss is {loss.item()} at step {step + 1}")
            loss.backward()
            step += 1
            loss_sum += loss.item()
            # the fused QKV adapter's B is block-diagonal in topa: its off-diagonal blocks are not parameters
            for k in qkv_b:
                g, rows, cols = params[k].grad, params[k].shape[0], params[k].shape[1]
                mask_bd = torch.zeros(rows, cols, dtype=torch.bool)
                for blk in range(3):
                    mask_bd[blk * rows // 3:(blk + 1) * rows // 3, blk * cols // 3:(blk + 1) * cols // 3] = True
                g.masked_fill_(~mask_bd, 0.0)
            norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params.values() if p.grad is not None))
            if r["max_grad_norm"] > 0 and norm > r["max_grad_norm"]:
                for p in params.values():
                    if p.grad is not None:
                        p.grad.mul_(np.float32(r["max_grad_norm"] / norm).item())
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=False)
        with torch.no_grad():
            outs = []
            nd = data["dev_offsets"].shape[0] - 1
            for i in range(0, nd, 64):
                ids, types, mask = batch(data, "dev", list(range(i, min(nd, i + 64))))
                outs.append(model.forward(ids, types, mask, False, 0))
            m = metrics(cfg, torch.cat(outs), data)
        best = max(best, m[main_metric])
        print(f"epoch {epoch}: train loss {loss_sum / steps_per_epoch:.4f}, " +
              ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k in cfg["metrics"]) + f", {time.time() - t0:.1f} s", flush=True)
    print(f"pytorch_best_{main_metric}: {best:.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
