#!/usr/bin/env bash
# test/fuzz/run.sh: build the libFuzzer targets and run each for a bounded time.
#
#   bash test/fuzz/run.sh                     # 30 s per target (CI)
#   FUZZ_SECONDS=3600 bash test/fuzz/run.sh   # an hour per target
#   FUZZ_TARGETS=loader bash test/fuzz/run.sh # one target
#
# Each target starts from its committed seeds (test/fuzz/corpus/<target>/)
# plus the corpus earlier runs grew on this machine (test/fuzz/build/corpus/,
# not committed).  A crash, a sanitizer report, a broken invariant, a leak
# or a unit slower than 10 s stops that target; the input that did it is
# saved as test/fuzz/artifacts/<target>/crash-<sha1> (or leak-, timeout-,
# oom-) and the command to replay it is printed.  Exits non-zero when any
# target failed.  Needs clang and libclang-rt-14-dev (Debian packages).
set -uo pipefail

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$FUZZ_DIR/../.." && pwd)
SECONDS_PER_TARGET=${FUZZ_SECONDS:-30}
TARGETS=${FUZZ_TARGETS:-normalize adf loader}
PG_CONFIG=${PG_CONFIG:-pg_config}

make -C "$ROOT" -s fuzz PG_CONFIG="$PG_CONFIG" || { echo "fuzz: build failed" >&2; exit 2; }

# seeds_generated TARGET DIR: seeds too big to commit, written at run time.
seeds_generated() {
	[ "$1" = loader ] || return 0
	local x70k
	x70k=$(head -c 70000 /dev/zero | tr '\0' x)
	# A line over the loader's 65536-byte limit, between two good lines,
	# and the same with a multibyte character cut short in its second field.
	printf '\0US\t49757\tMackinac Island\tMichigan\tMI\tMackinac\t097\t\t\t45.8492\t-84.6189\t4\nUS\t%s\nCA\tP0S\tBatchawana Bay\tOntario\t08\t\t\t\t\t46.9318\t-84.5617\t\n' \
		"$x70k" >"$2/long-line"
	printf '\0US\tABCDEFGHIJKLMN\xf0\t%s\n' "$x70k" >"$2/long-line-cut-character"
}

passed=0
failed=0
for target in $TARGETS; do
	bin=$FUZZ_DIR/${target}_fuzzer
	seeds=$FUZZ_DIR/corpus/$target
	work=$FUZZ_DIR/build/corpus/$target
	generated=$FUZZ_DIR/build/seeds/$target
	artifacts=$FUZZ_DIR/artifacts/$target
	mkdir -p "$work" "$generated" "$artifacts"
	seeds_generated "$target" "$generated"
	options=(-max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048
		-print_final_stats=1 -artifact_prefix="$artifacts/")
	[ -f "$FUZZ_DIR/$target.dict" ] && options+=(-dict="$FUZZ_DIR/$target.dict")
	[ "$target" = loader ] && options+=(-max_len=140000)
	echo "==> fuzzing $target for ${SECONDS_PER_TARGET}s"
	log=$FUZZ_DIR/build/$target.log
	if ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
		"$bin" "${options[@]}" "$work" "$seeds" "$generated" >"$log" 2>&1; then
		passed=$((passed + 1))
		grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | sed 's/^/    /'
		grep -aE 'INITED|DONE' "$log" | tail -1 | sed 's/^/    /'
	else
		failed=$((failed + 1))
		echo "    FAILED: $target (full output: $log)"
		grep -aE '\*\*\* aimroute fuzz|ERROR: |SUMMARY: |runtime error' "$log" | head -5 | sed 's/^/    /'
		for a in $(grep -aoE "Test unit written to [^ ]+" "$log" | awk '{print $5}'); do
			echo "    reproducer: $a"
			echo "    replay:     $bin $a"
		done
	fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
