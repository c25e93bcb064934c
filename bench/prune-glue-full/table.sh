#!/usr/bin/env bash
# The record's table into bench/RESULTS.md: GlueTable over results.tsv (its name: value lines on stdout and, but each
# row's mean, folded under the plot), the Markdown table put in place of the one in the full-data section, the plot
# copied to bench/plots/prune-glue-full.png.
# Reads nothing but the record; run it after rows land (no engine runs).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/../.."
source "$root/scripts/find-jdk.sh"
jar="$root/bench/target/benchmarks.jar"
[ -f "$jar" ] || mvn -q -B -f "$root/pom.xml" -DskipTests package >&2
"$(topa_find_jdk)/bin/java" -cp "$jar" dev.topa.bench.GlueTable "$here/results.tsv" "$here/prune-glue.png" "0.5 0.7" | tee "$here/prune-glue.lines.tmp"
mv "$here/prune-glue.lines.tmp" "$here/prune-glue.lines"
cp "$here/prune-glue.png" "$root/bench/plots/prune-glue-full.png.tmp" && mv "$root/bench/plots/prune-glue-full.png.tmp" "$root/bench/plots/prune-glue-full.png"
python3 - "$root/bench/RESULTS.md" "$here/prune-glue.md" "$here/prune-glue.lines" <<'PY'
import sys
results, table = sys.argv[1], open(sys.argv[2]).read().rstrip("\n").split("\n")
# the name: value lines but each row's mean (the table has it), folded under the plot
named = [l for l in open(sys.argv[3]).read().split("\n") if l and "_best_points:" not in l]
block = ["<!-- glue-lines: written by bench/prune-glue-full/table.sh -->", "<details><summary>GlueTable's name: value lines over the record",
         "(" + str(len(named)) + ")</summary>", "", "```"] + named + ["```", "</details>", "<!-- glue-lines end -->"]
lines = open(results).read().split("\n")
section = next(i for i, l in enumerate(lines) if l.startswith("## The Pruning-Adapter on full GLUE training sets"))
start = next(i for i in range(section, len(lines)) if lines[i].startswith("| task | method |"))
end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
lines[start:end] = table
plot = next(i for i in range(section, len(lines)) if lines[i].startswith("The plot the script writes"))
if lines[plot + 2].startswith("<!-- glue-lines:"):
    lines[plot + 2:lines.index("<!-- glue-lines end -->", plot) + 1] = block
else:
    lines[plot + 1:plot + 1] = [""] + block
open(results + ".tmp", "w").write("\n".join(lines))
PY
mv "$root/bench/RESULTS.md.tmp" "$root/bench/RESULTS.md"
