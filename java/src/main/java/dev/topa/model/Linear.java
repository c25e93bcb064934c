package dev.topa.model;

import dev.topa.backend.Backend;
import dev.topa.backend.Bf16Weight;
import dev.topa.backend.BlockSparseWeight;
import dev.topa.backend.DenseWeight;
import dev.topa.backend.LinearWeight;
import dev.topa.backend.Op;
import dev.topa.backend.PackedWeight;
import dev.topa.tensor.Tensor;
import dev.topa.tensor.TensorAllocator;

/**
 * One linear slot of a layer: W [out, in] in fp32 (the copy that trains, merges and is saved), its
 * bias, an optional LoRA adapter and block mask, and the packed forms its products run in on one
 * backend. The choice of form is made here and only here: {@link #inference} and {@link #training}.
 * A slot of a model compacted for inference ({@link #packedOnly}) has its bf16 pack and no W.
 */
final class Linear {
    final String name;
    /** W, or null where the slot holds only its inference pack. */
    final Tensor weight;
    final Tensor bias;
    final long out, in;
    Adapter adapter;
    /** The kept 32 x 32 blocks [out/32][in/32], or null (dense). */
    boolean[][] blockMask;
    /** A block-masked slot whose products run dense (measured faster on the device), zeros and all. */
    boolean denseForm;
    /** Packed for inference on one backend (fp32 panels or bf16 W^T), or null. */
    private LinearWeight inference;
    /** bf16 packs both ways for training with W frozen, or null. */
    private Bf16Weight frozen;
    /** The block packs for one backend (structure only when denseForm), or null. */
    private BlockSparseWeight.Pack[] blocks;

    /** Where packs are allocated: the model's weight scope. */
    private final TensorAllocator scope;

    Linear(String name, Tensor weight, Tensor bias, TensorAllocator scope) {
        this.name = name;
        this.weight = weight;
        this.bias = bias;
        this.scope = scope;
        this.out = weight.dim(0);
        this.in = weight.dim(1);
    }

    private Linear(String name, Bf16Weight pack, long out, long in, Tensor bias, TensorAllocator scope) {
        this.name = name;
        this.weight = null;
        this.bias = bias;
        this.scope = scope;
        this.out = out;
        this.in = in;
        this.inference = pack;
    }

    /** A slot [out, in] holding only w packed in bf16 for be's inference (from alloc; w null where out or in is 0), with bias: no fp32 W. */
    static Linear packedOnly(Backend be, String name, Tensor w, long out, long in, Tensor bias, TensorAllocator alloc) {
        return new Linear(name, w == null ? null : Bf16Weight.pack(be, w, alloc, false), out, in, bias, alloc);
    }

    boolean empty() {
        return out == 0 || in == 0;
    }

    /** W, which a slot holding only its inference pack does not have (what: what needs it, for the error). */
    Tensor weight(String what) {
        if (weight == null) throw new IllegalStateException(what + ": " + name + " holds only its bf16 inference pack (a model compacted for inference)");
        return weight;
    }

    /** Drops every packed form (the weight or its mask changed). */
    void unpack() {
        inference = null;
        frozen = null;
        blocks = null;
    }

    /**
     * The form inference multiplies: the block-sparse one, else what {@link #packForInference} made for
     * be, else W itself. adapted: an adapter's term comes with the product (masked, on a block-masked W).
     */
    LinearWeight inference(Backend be, boolean adapted) {
        LinearWeight packed = packedFor(inference, be);
        if (blockMask == null) return packed;
        if (denseForm && !adapted) return packed; // no masked term to add: the dense product alone
        return blockSparse(be, denseForm ? packed : null);
    }

    /**
     * The form training multiplies: W itself where W trains; else the block-sparse form, else the bf16
     * packs of {@link #packForTraining}, else W itself.
     */
    LinearWeight training(Backend be, boolean trainsWeight) {
        if (trainsWeight) {
            if (blockMask != null) throw new IllegalStateException(name + " is block-sparse: it trains frozen (adapters on top), not by full "
                    + "fine-tuning");
            return new DenseWeight(weight("training"));
        }
        LinearWeight packed = packedFor(frozen, be);
        return blockMask == null ? packed : blockSparse(be, denseForm ? packed : null);
    }

    private LinearWeight packedFor(LinearWeight form, Backend be) {
        return form != null && be.name().equals(form.backend()) ? form : new DenseWeight(weight("a product on " + be.name()));
    }

    private synchronized BlockSparseWeight blockSparse(Backend be, LinearWeight base) {
        if (blocks == null || !be.name().equals(blocks[0].backend())) packBlocks(be);
        return BlockSparseWeight.of(blocks[0], blocks[1], base);
    }

    /** The kept blocks packed for be both ways (the structure alone when the products run dense). */
    synchronized void packBlocks(Backend be) {
        Tensor w = weight("block packing");
        blocks = new BlockSparseWeight.Pack[] {BlockSparseWeight.pack(be, w, blockMask, false, scope, denseForm),
                BlockSparseWeight.pack(be, w, blockMask, true, scope, denseForm)};
    }

    /** W packed once for be's inference products: bf16 W^T, or fp32 panels (where the backend has them; else W stays as it is). */
    synchronized void packForInference(Backend be, boolean bf16) {
        packForInference(be, bf16, scope);
    }

    /** As above, the pack allocated from alloc (a scope the caller closes after {@link #dropInference}). */
    synchronized void packForInference(Backend be, boolean bf16, TensorAllocator alloc) {
        if (empty() || (blockMask != null && !denseForm)) return;
        if (inference != null && be.name().equals(inference.backend()) && (inference instanceof Bf16Weight) == bf16) return;
        if (bf16) inference = Bf16Weight.pack(be, weight("packing"), alloc, false);
        else if (be.supports(Op.PACKED_WEIGHTS)) inference = PackedWeight.pack(be, weight("packing"), alloc);
    }

    /** Forgets the inference pack (its memory goes with the allocator it came from). */
    synchronized void dropInference() {
        inference = null;
    }

    /** W rounded to bf16 and packed both ways for training with W frozen. */
    synchronized void packForTraining(Backend be) {
        if (empty() || (blockMask != null && !denseForm)) return;
        if (frozen != null && be.name().equals(frozen.backend())) return;
        frozen = Bf16Weight.pack(be, weight("packing for training"), scope, true);
    }
}
