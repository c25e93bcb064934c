# Shared by the before/after scripts (bench/ab.sh, bench/serve-stack.sh) and the serving ones: sourced, not run.

# FILE holds lines "before|after name: value" (several rounds); prints before_<name> and after_<name>
# (medians over the rounds) and, for names matching RATIO_RE, after_over_before_<name>.
ab_summary() { # FILE RATIO_RE
    awk -v re="$2" '{ key = $2; sub(/:$/, "", key); v[$1 " " key] = v[$1 " " key] " " $3; keys[key] = 1 }
        function median(list,   a, n, i, j, t) {
            n = split(list, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        END {
            for (k in keys) {
                b = median(v["before " k]); a = median(v["after " k])
                printf "before_%s: %s\nafter_%s: %s\n", k, b, k, a
                if (k ~ re && b > 0) printf "after_over_before_%s: %.3f\n", k, a / b
            }
        }' "$1" | sort
}

# The median ratio after/before of one name in FILE, printed as `LABEL: r`.
ab_ratio() { # FILE NAME LABEL
    ab_summary "$1" "^$2\$" | sed -n "s/^after_over_before_$2: /$3: /p"
}

# A server started in the background as $server on $port: wait_up LOG waits for its own "serving"
# line (not an older process still on the port) and /health; stop ends it.
server=""
stop() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; server=""; }
wait_up() { # LOG
    for _ in $(seq 1 600); do
        kill -0 "$server" 2>/dev/null || { echo "server exited:" >&2; tail -5 "$1" >&2; exit 1; }
        grep -q "^serving" "$1" && curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
        sleep 0.2
    done
    echo "server did not start" >&2; exit 1
}
