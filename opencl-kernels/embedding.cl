// Token + position + type embeddings (native/embedding.c). Ids are checked on the host before
// they are uploaded (BertModel.checkTokens); an id outside its table gives its row NaN here, never
// a read outside the table. Backward: a work-item per column walks the tokens in order, so repeated
// ids add into one row without atomics, in the CPU's order.

__kernel void embedding_forward(TENSOR(float, out), TENSOR(const int, ids), TENSOR(const int, pos_ids), TENSOR(const int, type_ids),
                                TENSOR(const float, wte), TENSOR(const float, wpe), TENSOR(const float, wtt), long BS, long S, long C,
                                long vocab, long max_pos, long n_types) {
    long e = get_global_id(0);
    if (e >= BS * C) return;
    long t = e / C, c = e % C;
    long id = AT(ids)[t], pos = pos_ids_buf ? AT(pos_ids)[t] : t % S, typ = type_ids_buf ? AT(type_ids)[t] : 0;
    if (id < 0 || id >= vocab || pos < 0 || pos >= max_pos || (wtt_buf && (typ < 0 || typ >= n_types))) {
        AT(out)[e] = NAN;
        return;
    }
    float v = AT(wte)[id * C + c] + AT(wpe)[pos * C + c];
    if (wtt_buf) v += AT(wtt)[typ * C + c];
    AT(out)[e] = v;
}

__kernel void embedding_backward(TENSOR(float, dwte), TENSOR(float, dwpe), TENSOR(float, dwtt), TENSOR(const float, dout),
                                 TENSOR(const int, ids), TENSOR(const int, pos_ids), TENSOR(const int, type_ids), long BS, long S, long C) {
    long c = get_global_id(0);
    if (c >= C) return;
    for (long t = 0; t < BS; t++) {
        float g = AT(dout)[t * C + c];
        if (dwte_buf) AT(dwte)[(long)AT(ids)[t] * C + c] += g;
        if (dwpe_buf) AT(dwpe)[(pos_ids_buf ? (long)AT(pos_ids)[t] : t % S) * C + c] += g;
        if (dwtt_buf) AT(dwtt)[(type_ids_buf ? (long)AT(type_ids)[t] : 0) * C + c] += g;
    }
}
