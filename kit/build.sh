#!/usr/bin/env bash
# Builds the GPU kit here (the device machine may have no JDK and no network): the engine jar
# (CPU library and topa_kernels.fatbin inside) and a jlink'd Java runtime, into kit/dist/
# (git-ignored; carried to the device machine with `run`, under its 64 MiB limit).
# Usage: kit/build.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/find-jdk.sh"
JAVA_HOME="$(topa_find_jdk)"
export JAVA_HOME
mvn -q -B -f "$root/pom.xml" -pl kit -am -DskipTests package >&2
kit="$root/kit/dist"
rm -rf "$kit"
mkdir -p "$kit"
cp "$root/kit/target/topa-kit.jar" "$kit/topa.jar"
unzip -l "$kit/topa.jar" | grep -q topa_kernels.fatbin || echo "build-kit: the jar has no fatbin (no nvcc here); run.sh will build it" >&2
"$JAVA_HOME/bin/jlink" --add-modules java.base,java.management --strip-debug --no-header-files --no-man-pages \
    --compress=zip-6 --output "$kit/jre"
du -sh "$kit" >&2
