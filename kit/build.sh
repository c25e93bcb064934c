#!/usr/bin/env bash
# Builds the GPU kit here (the device machine has no JDK and no network) into kit/dist/kit.tar.xz
# (git-ignored; carried to the device machine with `run`, under its 64 MiB limit; kit/run.sh unpacks
# it there): the kit jar (engine, op harness, command line, checks; libtopa_cpu.so,
# topa_kernels.fatbin and the linux-x86_64 tokenizer library inside), a jlink'd Java runtime (no
# java.desktop: the command line then skips its PNG), and what the command-line stage runs on -- a
# small random BERT with the default model's tokenizer, and the first rows of RTE.
# Usage: kit/build.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
mvn -q -B -f "$root/pom.xml" -pl kit -am -DskipTests package >&2
dist="$root/kit/dist"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
kit="$stage/topa-kit"
mkdir -p "$kit/cli/glue/RTE"
cp "$root/kit/target/topa-kit.jar" "$kit/topa.jar"
unzip -l "$kit/topa.jar" | grep topa_kernels.fatbin > /dev/null || echo "build-kit: the jar has no fatbin (no nvcc here); run.sh will build it" >&2
# the model: written with the default model's artifact on the class path (the command line's jar has it)
"$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "$kit/topa.jar:$root/cli/target/topa-cli.jar" dev.topa.kit.TinyBert \
    "$kit/cli/model" >&2
glue="$(cd "$root/.." && pwd)/shared/glue"
[ -d "${TOPA_GLUE_DIR:-$glue}" ] && glue="${TOPA_GLUE_DIR:-$glue}"
head -n 161 "$glue/RTE/train.tsv" > "$kit/cli/glue/RTE/train.tsv"
head -n 41 "$glue/RTE/dev.tsv" > "$kit/cli/glue/RTE/dev.tsv"
"$JAVA_HOME/bin/jlink" --add-modules java.base,java.management,java.logging,java.net.http,jdk.unsupported --strip-debug --no-header-files \
    --no-man-pages --compress=zip-6 --output "$kit/jre"
# the OpenCL ICD loader and CLBlast (the device machine has neither; its GPU driver may bring an ICD)
mkdir -p "$kit/lib"
for l in libOpenCL.so.1 libclblast.so.1; do
    f=$(ldconfig -p | awk -v l="$l" '$1 == l && !f { f = $NF } END { print f }') # no early exit: pipefail would see ldconfig's SIGPIPE
    [ -n "$f" ] && cp -L "$f" "$kit/lib/$l" || echo "build-kit: $l not found here (apt-get install ocl-icd-libopencl1 libclblast-dev); the OpenCL stage will say so" >&2
done
rm -rf "$dist"
mkdir -p "$dist"
tar -C "$stage" -cJf "$dist/kit.tar.xz.tmp" topa-kit
mv "$dist/kit.tar.xz.tmp" "$dist/kit.tar.xz"
du -sh "$dist/kit.tar.xz" >&2
