package dev.topa.serve;

import dev.topa.glue.GlueTask;
import java.util.List;

/** What the server needs of a model: its task and batched predictions ({@link Classifier} is topa's; a baseline engine can stand in). */
public interface TextModel {
    GlueTask task();

    /** Predictions in input order; IllegalArgumentException for a bad input. */
    List<Classifier.Prediction> predictBatch(List<Classifier.Input> inputs);
}
