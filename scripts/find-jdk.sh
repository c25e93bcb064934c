# Sourced by ./topa, ./mvnj, .ci/run and bench scripts: prints the home of a JDK >= 22.
# Order: $JAVA_HOME, the javac on PATH, then /usr/lib/jvm/* and /opt/* (newest first).
topa_jdk_feature() { # $1: a JDK home -> its feature version, or nothing
    local rel="$1/release"
    [ -x "$1/bin/javac" ] && [ -f "$rel" ] || return 0
    sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$rel"
}

topa_find_jdk() {
    local min=22 candidates=() c v
    [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME")
    if command -v javac >/dev/null 2>&1; then
        candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")")
    fi
    for c in $(ls -d /usr/lib/jvm/* /opt/*jdk* /opt/java/* 2>/dev/null | sort -rV); do candidates+=("$c"); done
    for c in "${candidates[@]}"; do
        v="$(topa_jdk_feature "$c")"
        if [ -n "$v" ] && [ "$v" -ge "$min" ]; then
            echo "$c"
            return 0
        fi
    done
    echo "topa: no JDK >= $min found (looked at JAVA_HOME, PATH, /usr/lib/jvm, /opt)." >&2
    echo "topa: install one, e.g. Temurin from https://adoptium.net, and set JAVA_HOME to it." >&2
    return 1
}
