// BERT embeddings: out[b, s, :] = word[ids[b, s]] + position[s] + type[types[b, s]] (types may be
// null: type 0). Tables are fp32 (they are parameters); out is fp32 or bf16. One block per token,
// threads over the hidden dimension. Ids out of range write NaN rows, so a bad id cannot pass
// silently (the host validates ids before the launch; this is the last line).
#include "common.cuh"

template <typename T>
__device__ void embeddingForward(T *out, const int32_t *ids, const int32_t *types, const float *word, const float *pos,
                                 const float *type, int S, int C, int vocab, int typeVocab) {
    int64_t token = blockIdx.x;
    int s = (int)(token % S), id = ids[token], t = types ? types[token] : 0;
    bool ok = id >= 0 && id < vocab && t >= 0 && (t < typeVocab || (typeVocab == 0 && t == 0));
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = ok ? word[(int64_t)id * C + c] + pos[(int64_t)s * C + c] + (typeVocab ? type[(int64_t)t * C + c] : 0.0f) : NAN;
        st(out, token * C + c, v);
    }
}

#define EMBEDDING(SUFFIX, T)                                                                                              \
    extern "C" __global__ void embedding_forward_##SUFFIX(T *out, const int32_t *ids, const int32_t *types,              \
                                                          const float *word, const float *pos, const float *type, int S, \
                                                          int C, int vocab, int typeVocab) {                              \
        embeddingForward(out, ids, types, word, pos, type, S, C, vocab, typeVocab);                                       \
    }
TOPA_BOTH_TYPES(EMBEDDING)

// Backward (fp32): scatter-add of dout rows into the tables' gradients (each may be null); repeated
// ids meet in atomics. One block per token. An id or type outside its table (vocab, typeVocab: the
// rows of dword, dtype) adds nothing: its forward row was NaN, the step will be skipped, and no
// write may land outside the table before it is.
extern "C" __global__ void embedding_backward_f32(float *dword, float *dpos, float *dtype, const float *dout, const int32_t *ids,
                                                  const int32_t *types, int S, int C, int vocab, int typeVocab) {
    int64_t token = blockIdx.x;
    int s = (int)(token % S), id = ids[token], t = types ? types[token] : 0;
    bool wordOk = dword && id >= 0 && id < vocab, typeOk = dtype && t >= 0 && t < typeVocab;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float g = dout[token * C + c];
        if (wordOk) atomicAdd(dword + (int64_t)id * C + c, g);
        if (dpos) atomicAdd(dpos + (int64_t)s * C + c, g);
        if (typeOk) atomicAdd(dtype + (int64_t)t * C + c, g);
    }
}
