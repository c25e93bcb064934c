package dev.topa.tensor;

import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Live and peak bytes for one device, per category and in total. Every allocator reports here, so
 * a report can state what a run really held. Peaks are kept per category and for the total (the
 * total's peak is not the sum of category peaks: they need not coincide), and the total's peak per
 * named phase of a run ({@link #phase}: scoring, training steps, evaluation, ...), so a report can say
 * which part of a run set its peak.
 */
public final class MemoryTracker {
    private static final Map<Device, MemoryTracker> TRACKERS = new ConcurrentHashMap<>();

    private final Device device;
    private final long[] live = new long[MemoryCategory.values().length];
    private final long[] peak = new long[MemoryCategory.values().length];
    private long totalLive;
    private long totalPeak;
    private final Map<String, Long> phasePeaks = new LinkedHashMap<>(); // phases ended, in the order first met
    private String phase;
    private long phasePeak;

    private MemoryTracker(Device device) {
        this.device = device;
    }

    /** The one tracker of a device. */
    public static MemoryTracker of(Device device) {
        return TRACKERS.computeIfAbsent(device, MemoryTracker::new);
    }

    public Device device() {
        return device;
    }

    /** Records an allocation (bytes > 0) or a release (bytes < 0). */
    public synchronized void add(MemoryCategory category, long bytes) {
        int i = category.ordinal();
        live[i] += bytes;
        totalLive += bytes;
        if (live[i] < 0 || totalLive < 0)
            throw new IllegalStateException("memory tracker of " + device + " went negative in "
                    + category.label() + ": a release without its allocation");
        peak[i] = Math.max(peak[i], live[i]);
        totalPeak = Math.max(totalPeak, totalLive);
        phasePeak = Math.max(phasePeak, totalLive);
    }

    /**
     * Names what the run does from now on (null: nothing named) and returns the name it replaces, so
     * that a part inside another (evaluation inside training) can put it back. Each name keeps the
     * largest total it saw, over every stretch it was in force; what is live when it starts counts.
     * Stretches under no name count in the total's peak only, so the largest phase may be below it.
     */
    public synchronized String phase(String name) {
        String was = phase;
        if (was != null) phasePeaks.merge(was, phasePeak, Math::max);
        phase = name;
        phasePeak = totalLive;
        return was;
    }

    /** A phase for a try-with-resources block: named now, the name it replaced put back when the block ends. */
    public interface Phase extends AutoCloseable {
        @Override
        void close();
    }

    /** {@link #phase}(name) until the returned phase is closed. */
    public Phase during(String name) {
        String was = phase(name);
        return () -> phase(was);
    }

    /** Forgets every phase (a new run starts; its report names only its own), the one in force included. */
    public synchronized void clearPhases() {
        phasePeaks.clear();
        phase = null;
    }

    /** "scoring 150.3 MiB, training 236.0 MiB, ...": {@link #phasePeaks} in words (empty: no phase named). */
    public synchronized String phaseSummary() {
        StringBuilder p = new StringBuilder();
        phasePeaks().forEach((n, b) -> p.append(p.isEmpty() ? "" : ", ").append(n).append(' ').append(human(b)));
        return p.toString();
    }

    /** The total's peak per phase named so far, in the order first met (the phase in force included). */
    public synchronized Map<String, Long> phasePeaks() {
        Map<String, Long> m = new LinkedHashMap<>(phasePeaks);
        if (phase != null) m.merge(phase, phasePeak, Math::max);
        return m;
    }

    public synchronized long live(MemoryCategory category) {
        return live[category.ordinal()];
    }

    public synchronized long peak(MemoryCategory category) {
        return peak[category.ordinal()];
    }

    public synchronized long totalLive() {
        return totalLive;
    }

    public synchronized long totalPeak() {
        return totalPeak;
    }

    /** Starts a new peak window for the categories and the total: their peaks become the current live bytes (phases keep theirs). */
    public synchronized void resetPeaks() {
        System.arraycopy(live, 0, peak, 0, live.length);
        totalPeak = totalLive;
    }

    public synchronized Map<MemoryCategory, long[]> snapshot() {
        Map<MemoryCategory, long[]> m = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : MemoryCategory.values())
            m.put(c, new long[] {live[c.ordinal()], peak[c.ordinal()]});
        return m;
    }

    /** A small table: one line per category with live and peak, then the total. */
    public synchronized String report() {
        StringBuilder sb = new StringBuilder();
        sb.append(String.format("memory on %s%n", device));
        sb.append(String.format("  %-12s %12s %12s%n", "category", "live", "peak"));
        for (MemoryCategory c : MemoryCategory.values())
            sb.append(String.format("  %-12s %12s %12s%n", c.label(), human(live[c.ordinal()]),
                    human(peak[c.ordinal()])));
        sb.append(String.format("  %-12s %12s %12s%n", "total", human(totalLive), human(totalPeak)));
        String phases = phaseSummary();
        if (!phases.isEmpty()) sb.append("  peak by phase: ").append(phases).append(String.format("%n"));
        return sb.toString();
    }

    public static String human(long bytes) {
        if (bytes < 1024) return bytes + " B";
        double v = bytes;
        String[] units = {"KiB", "MiB", "GiB", "TiB"};
        int u = -1;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return String.format("%.1f %s", v, units[u]);
    }
}
