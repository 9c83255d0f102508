# paired.sh: helpers for the benchmarks in scripts/bench.d, sourced by them.
# Claims are medians of paired runs (reference and intact alternately, the
# order flipped every other pair), reported with their spread (min-max) and
# the machine's load average, never best-of-N.

timebin=/usr/bin/time
[ -x $timebin ] || { echo "$timebin not installed (Debian package time; make deps)"; exit 1; }

# timed LOG CMD...: run CMD under /usr/bin/time -v (stdout to $BENCH_DIR/stdout);
# prints "wall_seconds cpu_seconds maxrss_kib". The wall time is taken with
# microsecond resolution around it (time -v has centiseconds); CPU time is
# user+sys of the command and its children. The command's exit status is
# left in $BENCH_DIR/rc (callers read the output through a pipe, which
# hides it): check it with ok.
timed() {
	local log=$1 t0 t1 rc=0
	shift
	t0=$EPOCHREALTIME
	$timebin -v -o "$log" "$@" > "$BENCH_DIR/stdout" || rc=$?
	t1=$EPOCHREALTIME
	echo "$rc" > "$BENCH_DIR/rc"
	awk -F': ' -v t0="$t0" -v t1="$t1" '/User time|System time/ {c+=$2} /Maximum resident set size/ {r=$2}
		END {printf "%.6f %.3f %d\n", t1-t0, c, r}' "$log"
}

# stats: numbers on stdin, one per line; prints "median min max".
stats() {
	sort -g | awk '{v[NR]=$1} END {
		if (NR == 0) { print "nan nan nan"; exit }
		m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
		printf "%.3f %.3f %.3f\n", m, v[1], v[NR] }'
}

# load1: the 1-minute load average now.
load1() { cut -d' ' -f1 /proc/loadavg; }

# ok WHAT: fail the benchmark if the last timed command failed.
ok() {
	local rc
	rc=$(cat "$BENCH_DIR/rc")
	[ "$rc" = 0 ] || { echo "FAIL: $1 exited $rc"; cat "$BENCH_DIR/stdout" >&2; exit 1; }
}
