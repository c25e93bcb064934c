package dev.topa.bench;

/** Prints which OpenBLAS kernel family this process gets: `openblas_core: NAME`. */
public final class OpenBlasInfo {
    public static void main(String[] args) throws Throwable {
        System.out.println("openblas_core: " + new OpenBlas().coreName());
    }
}
