// The one translation unit the fatbin is built from (nvcc -fatbin takes one source): every op
// family's file, each self-contained.
#include "attention.cu"
#include "attention_tc.cu"
#include "convert.cu"
#include "embedding.cu"
#include "gelu.cu"
#include "layernorm.cu"
#include "loss.cu"
#include "softmax.cu"
