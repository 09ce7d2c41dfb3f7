/*
 * known_bugs.h
 *		Invariants the fuzzers check that the code does not meet yet.
 *
 * Each line names a bug found by fuzzing and not fixed yet; while it is
 * here, the fuzzers skip the one check that finds it, so that CI can run
 * the rest.  When the bug is fixed, delete its line: the check then bites
 * again.  Building with -DAIMROUTE_FUZZ_STRICT (make -C test/fuzz clean all
 * EXTRA_CFLAGS=-DAIMROUTE_FUZZ_STRICT) turns every check on, to see whether
 * a bug still shows: the reproducers are in corpus/ and run.sh's generated
 * seeds.  docs/reliability.md ("Fuzzing") lists them; the Perl layer
 * (t/005_fuzz.pl) keeps the same bugs in TODO tests.
 */
#ifndef AIMROUTE_FUZZ_KNOWN_BUGS_H
#define AIMROUTE_FUZZ_KNOWN_BUGS_H
#ifndef AIMROUTE_FUZZ_STRICT

/* None open: the four bugs fuzzing found are fixed. */

#endif /* AIMROUTE_FUZZ_STRICT */
#endif /* AIMROUTE_FUZZ_KNOWN_BUGS_H */
