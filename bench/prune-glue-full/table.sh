#!/usr/bin/env bash
# The record's table into bench/RESULTS.md: GlueTable over results.tsv (its name: value lines on stdout), the
# Markdown table put in place of the one in the full-data section, the plot copied to bench/plots/prune-glue-full.png.
# Reads nothing but the record; run it after rows land (no engine runs).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/../.."
source "$root/scripts/find-jdk.sh"
jar="$root/bench/target/benchmarks.jar"
[ -f "$jar" ] || mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
"$(topa_find_jdk)/bin/java" -cp "$jar" dev.topa.bench.GlueTable "$here/results.tsv" "$here/prune-glue.png" "0.5 0.7"
cp "$here/prune-glue.png" "$root/bench/plots/prune-glue-full.png.tmp" && mv "$root/bench/plots/prune-glue-full.png.tmp" "$root/bench/plots/prune-glue-full.png"
python3 - "$root/bench/RESULTS.md" "$here/prune-glue.md" <<'PY'
import sys
results, table = sys.argv[1], open(sys.argv[2]).read().rstrip("\n").split("\n")
lines = open(results).read().split("\n")
section = next(i for i, l in enumerate(lines) if l.startswith("## The Pruning-Adapter on full GLUE training sets"))
start = next(i for i in range(section, len(lines)) if lines[i].startswith("| task | method |"))
end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
lines[start:end] = table
open(results + ".tmp", "w").write("\n".join(lines))
PY
mv "$root/bench/RESULTS.md.tmp" "$root/bench/RESULTS.md"
