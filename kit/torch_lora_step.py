"""PyTorch eager LoRA training step on this GPU: the baseline topa's CUDA training step is reported
beside (kit/run.sh runs both in the same call). Random-weight BERT-base (transformers'
BertModel from a config), PEFT LoRA r 8 alpha 16 on query and value (PEFT's default for BERT),
mask-aware mean pooling and a linear head of 3 classes, cross-entropy, AdamW on the trainable parameters; bf16
autocast (the usual mixed-precision recipe) and fp32. Median wall time of 10 steps after 3 warm-ups,
each step ending with the loss read back. Prints `name: value` lines."""
import time
import torch
from transformers import BertConfig, BertModel
from peft import LoraConfig, get_peft_model


def main():
    batch, seq = 32, 128
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        attn_implementation="sdpa")
    encoder = get_peft_model(BertModel(config, add_pooling_layer=False), LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                                                                                    lora_dropout=0.0)).cuda()
    head = torch.nn.Linear(768, 3).cuda()
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, 30522, (batch, seq), device="cuda")
    mask = torch.ones(batch, seq, dtype=torch.long, device="cuda")
    labels = torch.randint(0, 3, (batch,), device="cuda")
    for tag, autocast in (("bf16_autocast", True), ("fp32", False)):
        times = []
        for i in range(13):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                logits = head((hidden * m).sum(1) / m.sum(1))
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        print(f"torch_lora_step_bertbase_b{batch}_s{seq}_{tag}_ms: {times[len(times) // 2]:.3f}")
    print(f"torch_lora_step_peak_mib: {torch.cuda.max_memory_allocated() / 2**20:.1f}")


if __name__ == "__main__":
    main()
