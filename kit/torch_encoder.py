"""PyTorch's encoder inference throughput on this GPU: the baseline that topa's CUDA encoder is
reported beside (kit/run.sh runs both in the same call). Random-weight BERT (transformers'
BertModel from a config, no download), eval mode, batch x seq tokens, every sequence full length.
Prints `name: value` lines; times are CUDA-event medians after warm-up."""
import sys
import torch
from transformers import BertConfig, BertModel

SHAPES = {
    "bertbase": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
}


def time_ms(fn, warmup=10, runs=30):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def main():
    batch, seq = 32, 128
    torch.manual_seed(0)
    print(f"torch: {torch.__version__} on {torch.cuda.get_device_name()}")
    for name, shape in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            config = BertConfig(vocab_size=30522, max_position_embeddings=512, attn_implementation="sdpa", **shape)
            model = BertModel(config, add_pooling_layer=False).cuda().to(dtype).eval()
            ids = torch.randint(0, 30522, (batch, seq), device="cuda")
            mask = torch.ones(batch, seq, dtype=torch.long, device="cuda")
            with torch.inference_mode():
                ms = time_ms(lambda: model(input_ids=ids, attention_mask=mask))
            tag = "bf16" if dtype == torch.bfloat16 else "fp32"
            print(f"torch_{name}_b{batch}_s{seq}_{tag}_ms: {ms:.3f}")
            print(f"torch_{name}_b{batch}_s{seq}_{tag}_seq_per_s: {batch * 1000.0 / ms:.1f}")
            if dtype == torch.bfloat16:  # the same forward replayed as one CUDA graph: no Python or launch overhead left
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode():
                    stream = torch.cuda.Stream()
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream):
                        for _ in range(3):
                            model(input_ids=ids, attention_mask=mask)
                    torch.cuda.current_stream().wait_stream(stream)
                    with torch.cuda.graph(graph):
                        model(input_ids=ids, attention_mask=mask)
                ms = time_ms(graph.replay)
                print(f"torch_{name}_b{batch}_s{seq}_{tag}_cudagraph_ms: {ms:.3f}")
            del model
            torch.cuda.empty_cache()
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = time_ms(lambda: a @ b, warmup=3, runs=10)
    print(f"torch_bf16_gemm_8192_tflops: {2 * 8192 ** 3 / ms / 1e9:.1f}")


if __name__ == "__main__":
    sys.exit(main())
