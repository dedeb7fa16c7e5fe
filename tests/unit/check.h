/* The tiny check helper of the unit tests: CHECK records a failure with
 * its location and goes on; check_finish() prints the verdict and gives
 * the exit status. */
#ifndef TESTS_UNIT_CHECK_H
#define TESTS_UNIT_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			failures++;                                            \
		}                                                              \
	} while (0)

static inline int check_finish(const char *what)
{
	if (failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", what, failures);
		return 1;
	}
	fprintf(stderr, "%s: all checks passed\n", what);
	return 0;
}

#endif
