package dev.topa.io;

import dev.topa.backend.cpu.NativeLibrary;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * Downloads a model repository's files from a Hugging Face hub into a local cache
 * ({@code <cache>/hub/<org>/<name>/}). A download goes to {@code <file>.part} and continues from
 * where it stopped (HTTP Range) when run again; the size the server declares is checked before the
 * file takes its final name (atomic rename), so the cache never holds a partial file under a real
 * name. Offline mode uses the cache only.
 */
public final class HubClient {
    public static final List<String> MODEL_FILES = List.of("config.json", "model.safetensors", "tokenizer.json");
    private static final Pattern REPO = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*");

    private final URI base;
    private final Path cache;
    private final boolean offline;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(20))
            .followRedirects(HttpClient.Redirect.NORMAL).build();

    public HubClient(URI base, Path cache, boolean offline) {
        this.base = base;
        this.cache = cache;
        this.offline = offline;
    }

    /** From the environment: TOPA_HUB_URL (default https://huggingface.co), TOPA_OFFLINE=1 or HF_HUB_OFFLINE=1. */
    public static HubClient fromEnvironment() {
        String url = Optional.ofNullable(System.getenv("TOPA_HUB_URL")).orElse("https://huggingface.co");
        boolean offline = "1".equals(System.getenv("TOPA_OFFLINE")) || "1".equals(System.getenv("HF_HUB_OFFLINE"));
        return new HubClient(URI.create(url), NativeLibrary.cacheDir().resolve("hub"), offline);
    }

    public static boolean isRepoId(String spec) {
        return REPO.matcher(spec).matches();
    }

    /** The local directory holding the repository's model files, downloading what is missing. */
    public Path fetch(String repo) throws IOException {
        if (!isRepoId(repo)) throw new IllegalArgumentException("'" + repo + "' is not a hub repository id (org/name)");
        Path dir = cache.resolve(repo);
        for (String f : MODEL_FILES) {
            Path target = dir.resolve(f);
            if (Files.isRegularFile(target)) continue;
            if (offline)
                throw new IOException("offline: " + target + " is not in the cache (run once with a network, or unset TOPA_OFFLINE)");
            download(URI.create(base.toString().replaceAll("/+$", "") + "/" + repo + "/resolve/main/" + f), target);
        }
        return dir;
    }

    private void download(URI uri, Path target) throws IOException {
        Files.createDirectories(target.getParent());
        Path part = target.resolveSibling(target.getFileName() + ".part");
        long have = Files.isRegularFile(part) ? Files.size(part) : 0;
        HttpRequest.Builder req = HttpRequest.newBuilder(uri).timeout(Duration.ofMinutes(30)).GET();
        if (have > 0) req.header("Range", "bytes=" + have + "-");
        HttpResponse<InputStream> resp;
        try {
            resp = http.send(req.build(), HttpResponse.BodyHandlers.ofInputStream());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while downloading " + uri, e);
        }
        int code = resp.statusCode();
        boolean resumed = code == 206;
        if (code != 200 && code != 206) {
            resp.body().close();
            throw new IOException("GET " + uri + " answered HTTP " + code);
        }
        long expected = total(resp, resumed ? have : 0);
        IOException broken = null;
        try (InputStream in = resp.body();
                OutputStream out = Files.newOutputStream(part, StandardOpenOption.CREATE,
                        resumed ? StandardOpenOption.APPEND : StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE)) {
            in.transferTo(out);
        } catch (IOException e) {
            broken = e; // connection lost: keep what arrived for the next run
        }
        long size = Files.size(part);
        if (broken != null || (expected >= 0 && size != expected))
            throw new IOException("download of " + uri + " stopped at " + size + " of " + (expected < 0 ? "?" : expected)
                    + " bytes; run again to resume (partial data kept in " + part + ")", broken);
        Files.move(part, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** The full file size the server declares, or -1 when it does not say. */
    private static long total(HttpResponse<?> resp, long offset) {
        Optional<String> range = resp.headers().firstValue("Content-Range"); // bytes a-b/total
        if (range.isPresent()) {
            String r = range.get();
            int slash = r.lastIndexOf('/');
            if (slash > 0 && !r.endsWith("*")) return Long.parseLong(r.substring(slash + 1).trim());
        }
        long len = resp.headers().firstValueAsLong("Content-Length").orElse(-1);
        return len < 0 ? -1 : offset + len;
    }
}
