package dev.topa.glue;

/** One GLUE example: text (and second text for pair tasks), class id (-1 for regression), target value. */
public record Example(String textA, String textB, int label, float score) {}
