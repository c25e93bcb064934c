package dev.topa.harness;

import dev.topa.backend.Op;

/**
 * One op at one shape: its check against the float64 reference (and its backward against finite
 * differences), on whatever backend the workspace holds. requires: the optional op it needs
 * (null: only required ones); a backend without it skips the case and says so.
 */
public record OpCase(String family, String name, Op requires, Body body) {
    @FunctionalInterface
    public interface Body {
        void check(Workspace ws) throws Throwable;
    }

    public OpCase(String family, String name, Body body) {
        this(family, name, null, body);
    }
}
