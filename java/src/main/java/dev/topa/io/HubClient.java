package dev.topa.io;

import dev.topa.backend.cpu.NativeLibrary;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * Downloads a model repository's files from a Hugging Face hub into a local cache
 * ({@code <cache>/hub/<org>/<name>/}), resumable and atomic ({@link Downloader}). Offline mode uses
 * the cache only.
 */
public final class HubClient {
    public static final List<String> MODEL_FILES = List.of("config.json", "model.safetensors", "tokenizer.json");
    private static final Pattern REPO = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*");

    private final URI base;
    private final Path cache;
    private final boolean offline;
    private final HttpClient http = Downloader.client();

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
        Downloader.download(http, uri, target);
    }
}
