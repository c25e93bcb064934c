package dev.topa.testing;

import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;

/** Where tests find GLUE: $TOPA_GLUE_DIR, else shared/glue beside the checkout. */
public final class TestData {
    private TestData() {}

    /** The GLUE directory; skips the test when there is none, fails it under CI=true. */
    public static Path glue() {
        String env = System.getenv("TOPA_GLUE_DIR");
        Path dir = env != null && !env.isBlank() ? Path.of(env) : null;
        for (Path p = Path.of("").toAbsolutePath(); dir == null && p != null; p = p.getParent())
            if (Files.isDirectory(p.resolve("shared/glue"))) dir = p.resolve("shared/glue");
        if (dir == null && "true".equals(System.getenv("CI")))
            fail("GLUE data not found (TOPA_GLUE_DIR unset and no shared/glue above " + Path.of("").toAbsolutePath() + ")");
        assumeTrue(dir != null, "GLUE data not found: set TOPA_GLUE_DIR or place shared/glue beside the checkout");
        return dir;
    }
}
