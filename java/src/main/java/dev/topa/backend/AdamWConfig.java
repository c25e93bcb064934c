package dev.topa.backend;

/**
 * AdamW hyper-parameters for one step (the learning rate changes with the schedule). Doubles, as
 * in PyTorch: 1 - beta2 formed from a float 0.999 would be off by 1e-5 relative.
 */
public record AdamWConfig(double lr, double beta1, double beta2, double eps, double weightDecay) {
    public AdamWConfig {
        if (!(lr >= 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0) || !(weightDecay >= 0))
            throw new IllegalArgumentException("AdamW: need lr >= 0, 0 <= beta1, beta2 < 1, eps > 0, weight_decay >= 0; got "
                    + lr + ", " + beta1 + ", " + beta2 + ", " + eps + ", " + weightDecay);
    }

    public static AdamWConfig of(double lr, double weightDecay) {
        return new AdamWConfig(lr, 0.9, 0.999, 1e-8, weightDecay);
    }

    public AdamWConfig withLr(double newLr) {
        return new AdamWConfig(newLr, beta1, beta2, eps, weightDecay);
    }
}
