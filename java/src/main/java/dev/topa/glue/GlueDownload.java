package dev.topa.glue;

import dev.topa.backend.cpu.NativeLibrary;
import dev.topa.io.Downloader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;
import java.util.zip.ZipEntry;
import java.util.zip.ZipInputStream;

/**
 * Fetches GLUE tasks into a cache laid out as the standard distribution ({@code <cache>/<Folder>/
 * train.tsv, dev.tsv, ...}), as the usual download_glue_data.py does: every task but MRPC is one
 * zip archive under the GLUE base URL; MRPC is rebuilt from Microsoft's release files (SentEval's
 * copy) and GLUE's list of dev pairs. A task's folder appears only complete (extracted into a
 * temporary folder, then renamed); archives are downloaded resumably.
 *
 * <p>With a custom base URL (a mirror, or a test fixture) every file is looked up under it by the
 * same file name: {@code <base>/CoLA.zip}, ..., {@code <base>/msr_paraphrase_train.txt},
 * {@code <base>/msr_paraphrase_test.txt}, {@code <base>/mrpc_dev_ids.tsv}.
 */
public final class GlueDownload {
    public static final URI DEFAULT_BASE = URI.create("https://dl.fbaipublicfiles.com/glue/data/");
    private static final String SENTEVAL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/";
    private static final String MRPC_DEV_IDS = "https://firebasestorage.googleapis.com/v0/b/mtl-sentence-representations.appspot.com/o/"
            + "data%2Fmrpc_dev_ids.tsv?alt=media&token=ec5c0836-31d5-48f4-b431-7480817f1adc";

    private final URI base;
    private final Path cache;
    private final HttpClient http = Downloader.client();

    public GlueDownload(URI base, Path cache) {
        String b = base.toString();
        this.base = URI.create(b.endsWith("/") ? b : b + "/");
        this.cache = cache;
    }

    /**
     * The data directory for a run without --data-dir: the cache under topa's cache directory, from
     * TOPA_GLUE_URL (default: GLUE's own) unless TOPA_OFFLINE=1, where the cache must already hold it.
     */
    public static Path dataDir(GlueTask task) throws IOException {
        Path cache = NativeLibrary.cacheDir().resolve("glue");
        if ("1".equals(System.getenv("TOPA_OFFLINE"))) {
            if (Files.isRegularFile(cache.resolve(task.folder()).resolve(task.trainFile()))) return cache;
            throw new IOException("offline: " + task.folder() + " is not in the GLUE cache " + cache + "; give --data-dir or unset TOPA_OFFLINE");
        }
        String url = System.getenv("TOPA_GLUE_URL");
        return new GlueDownload(url != null ? URI.create(url) : DEFAULT_BASE, cache).fetch(task);
    }

    /** The data directory holding the task (cache), downloading it first when missing. */
    public Path fetch(GlueTask task) throws IOException {
        Path dir = cache.resolve(task.folder());
        if (Files.isRegularFile(dir.resolve(task.trainFile())) && Files.isRegularFile(dir.resolve(task.devFile()))) return cache;
        Files.createDirectories(cache);
        Path tmp = Files.createTempDirectory(cache, "." + task.folder() + "-");
        try {
            if (task == GlueTask.MRPC) buildMrpc(tmp);
            else extract(archive(task), task, tmp);
            for (String f : List.of(task.trainFile(), task.devFile()))
                if (!Files.isRegularFile(tmp.resolve(f)))
                    throw new IOException("the GLUE download of " + task.folder() + " has no " + f + " (from " + base + ")");
            Files.move(tmp, dir, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            deleteTree(tmp);
        }
        return cache;
    }

    private boolean custom() {
        return !base.equals(DEFAULT_BASE);
    }

    private static String archiveName(GlueTask task) {
        return switch (task) {
            case QQP -> "QQP-clean.zip";
            case QNLI -> "QNLIv2.zip";
            default -> task.folder() + ".zip";
        };
    }

    private Path archive(GlueTask task) throws IOException {
        Path zip = cache.resolve(".downloads").resolve(archiveName(task));
        if (!Files.isRegularFile(zip)) Downloader.download(http, base.resolve(archiveName(task)), zip);
        return zip;
    }

    /** Unzips the archive's files of the task's folder (any top-level folder name) flat into dir. */
    private static void extract(Path zip, GlueTask task, Path dir) throws IOException {
        try (ZipInputStream in = new ZipInputStream(Files.newInputStream(zip))) {
            for (ZipEntry e; (e = in.getNextEntry()) != null; ) {
                if (e.isDirectory()) continue;
                String name = e.getName().replace('\\', '/');
                String[] parts = name.split("/");
                // a file inside the task's folder: <Folder>/x.tsv or <Folder>/original/... (kept relative)
                if (parts.length < 2 || name.contains("..") || name.startsWith("/") || name.startsWith("__MACOSX")) continue;
                Path target = dir.resolve(String.join("/", java.util.Arrays.copyOfRange(parts, 1, parts.length))).normalize();
                if (!target.startsWith(dir)) throw new IOException(zip + ": entry " + name + " points outside its folder");
                Files.createDirectories(target.getParent());
                Files.copy(in, target, StandardCopyOption.REPLACE_EXISTING);
            }
        } catch (java.util.zip.ZipException e) {
            Files.deleteIfExists(zip); // a corrupt archive is fetched again next time
            throw new IOException(zip + " is not a readable zip archive (" + e.getMessage() + "); deleted, run again to re-download", e);
        }
    }

    /** MRPC as download_glue_data.py builds it: train = Microsoft's train minus GLUE's dev pairs. */
    private void buildMrpc(Path dir) throws IOException {
        Path dl = cache.resolve(".downloads");
        Path train = fetchFile(custom() ? "msr_paraphrase_train.txt" : SENTEVAL + "msr_paraphrase_train.txt", dl);
        Path test = fetchFile(custom() ? "msr_paraphrase_test.txt" : SENTEVAL + "msr_paraphrase_test.txt", dl);
        Path ids = fetchFile(custom() ? "mrpc_dev_ids.tsv" : MRPC_DEV_IDS, dl);
        Set<String> dev = new HashSet<>();
        for (String line : Files.readAllLines(ids, StandardCharsets.UTF_8)) {
            String[] p = line.strip().split("\t");
            if (p.length == 2) dev.add(p[0] + "\t" + p[1]);
        }
        if (dev.isEmpty()) throw new IOException(ids + ": no dev pair ids (expected lines 'id1<TAB>id2')");
        List<String> rows = Files.readAllLines(train, StandardCharsets.UTF_8);
        if (rows.isEmpty()) throw new IOException(train + " is empty");
        String header = rows.get(0).replace("\uFEFF", "");
        try (BufferedWriter tr = Files.newBufferedWriter(dir.resolve("train.tsv"), StandardCharsets.UTF_8);
                BufferedWriter dv = Files.newBufferedWriter(dir.resolve("dev.tsv"), StandardCharsets.UTF_8)) {
            tr.write(header + "\n");
            dv.write(header + "\n");
            for (int i = 1; i < rows.size(); i++) {
                String[] p = rows.get(i).split("\t");
                if (p.length != 5) throw new IOException(train + ":" + (i + 1) + ": expected 5 tab-separated columns, got " + p.length);
                (dev.contains(p[1] + "\t" + p[2]) ? dv : tr).write(rows.get(i) + "\n");
            }
        }
        List<String> testRows = Files.readAllLines(test, StandardCharsets.UTF_8);
        try (BufferedWriter te = Files.newBufferedWriter(dir.resolve("test.tsv"), StandardCharsets.UTF_8)) {
            te.write("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n");
            for (int i = 1; i < testRows.size(); i++) {
                String[] p = testRows.get(i).split("\t");
                if (p.length == 5) te.write((i - 1) + "\t" + p[1] + "\t" + p[2] + "\t" + p[3] + "\t" + p[4] + "\n");
            }
        }
    }

    private Path fetchFile(String nameOrUrl, Path dl) throws IOException {
        URI uri = nameOrUrl.startsWith("http") ? URI.create(nameOrUrl) : base.resolve(nameOrUrl);
        String name = nameOrUrl.contains("mrpc_dev_ids") ? "mrpc_dev_ids.tsv" : nameOrUrl.substring(nameOrUrl.lastIndexOf('/') + 1);
        Path target = dl.resolve(name);
        if (!Files.isRegularFile(target)) Downloader.download(http, uri, target);
        return target;
    }

    private static void deleteTree(Path dir) throws IOException {
        if (!Files.exists(dir)) return;
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        }
    }

}
