package dev.topa.io;

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
import java.util.Optional;

/**
 * One file over HTTP into a cache: the bytes go to {@code <file>.part} and continue from where they
 * stopped (HTTP Range) when run again; the size the server declares is checked before the file
 * takes its final name (atomic rename), so a cache never holds a partial file under a real name.
 */
public final class Downloader {
    private Downloader() {}

    public static HttpClient client() {
        return HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(20)).followRedirects(HttpClient.Redirect.NORMAL).build();
    }

    public static void download(HttpClient http, URI uri, Path target) throws IOException {
        Files.createDirectories(target.toAbsolutePath().getParent());
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
