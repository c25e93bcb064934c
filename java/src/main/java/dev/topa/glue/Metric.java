package dev.topa.glue;

import java.util.Arrays;

/**
 * GLUE's official metrics, reported as GLUE does (x100 in reports; here as fractions / correlation
 * coefficients). F1 is for the positive class 1; Matthews correlation is CoLA's metric.
 */
public enum Metric {
    ACCURACY, F1, MATTHEWS, PEARSON, SPEARMAN;

    /** Classification metrics from predicted and gold class ids. */
    public double classification(int[] predicted, int[] gold) {
        if (predicted.length != gold.length || gold.length == 0)
            throw new IllegalArgumentException(this + ": need equal, non-empty prediction and label arrays");
        long tp = 0, tn = 0, fp = 0, fn = 0, correct = 0;
        for (int i = 0; i < gold.length; i++) {
            if (predicted[i] == gold[i]) correct++;
            boolean p = predicted[i] == 1, g = gold[i] == 1;
            if (p && g) tp++;
            else if (!p && !g) tn++;
            else if (p) fp++;
            else fn++;
        }
        return switch (this) {
            case ACCURACY -> (double) correct / gold.length;
            case F1 -> tp == 0 ? 0 : 2.0 * tp / (2.0 * tp + fp + fn);
            case MATTHEWS -> {
                double den = Math.sqrt((double) (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn));
                yield den == 0 ? 0 : ((double) tp * tn - (double) fp * fn) / den;
            }
            default -> throw new IllegalArgumentException(this + " is a regression metric");
        };
    }

    /** Regression metrics from predicted and gold values. */
    public double regression(double[] predicted, double[] gold) {
        if (predicted.length != gold.length || gold.length < 2)
            throw new IllegalArgumentException(this + ": need equal arrays of at least 2 values");
        return switch (this) {
            case PEARSON -> pearson(predicted, gold);
            case SPEARMAN -> pearson(ranks(predicted), ranks(gold));
            default -> throw new IllegalArgumentException(this + " is a classification metric");
        };
    }

    private static double pearson(double[] x, double[] y) {
        double mx = Arrays.stream(x).average().orElse(0), my = Arrays.stream(y).average().orElse(0);
        double sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < x.length; i++) {
            sxy += (x[i] - mx) * (y[i] - my);
            sxx += (x[i] - mx) * (x[i] - mx);
            syy += (y[i] - my) * (y[i] - my);
        }
        return sxx == 0 || syy == 0 ? 0 : sxy / Math.sqrt(sxx * syy);
    }

    /** Ranks from 1, ties sharing their average rank (as scipy's spearmanr). */
    static double[] ranks(double[] v) {
        Integer[] idx = new Integer[v.length];
        for (int i = 0; i < v.length; i++) idx[i] = i;
        Arrays.sort(idx, (a, b) -> Double.compare(v[a], v[b]));
        double[] r = new double[v.length];
        for (int i = 0; i < v.length;) {
            int j = i;
            while (j + 1 < v.length && v[idx[j + 1]] == v[idx[i]]) j++;
            double avg = (i + j) / 2.0 + 1;
            for (int k = i; k <= j; k++) r[idx[k]] = avg;
            i = j + 1;
        }
        return r;
    }
}
