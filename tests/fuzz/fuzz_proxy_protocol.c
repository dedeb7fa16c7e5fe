/* libFuzzer target for common/proxy_protocol.c: the first bytes of a
 * connection from a load balancer. Properties: a header is never longer
 * than the input or PROXY_PROTOCOL_MAX; feeding any prefix of an accepted
 * header gives PP_MORE (never BAD); a refused input is refused the same
 * way with more bytes appended; addresses have the right family.
 *
 * Built with -DFUZZ_STANDALONE_MAIN it replays tests/fuzz/corpus/proxy_protocol. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base.h"
#include "common/proxy_protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REQUIRE(cond)                                                   \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: property failed: %s\n",     \
				__FILE__, __LINE__, #cond);                  \
			abort();                                             \
		}                                                            \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t empty[1];
	if (size == 0)
		data = empty;
	struct pp_info pi;
	size_t used;
	const char *err;
	enum pp_result r = proxy_protocol_parse(data, size, &pi, &used, &err);
	if (r == PP_OK) {
		FUZZ_REQUIRE(used >= 16 && used <= size && used <= PROXY_PROTOCOL_MAX);
		if (pi.has_addr)
			FUZZ_REQUIRE(pi.src.ss_family == pi.dst.ss_family &&
				     (pi.src.ss_family == AF_INET || pi.src.ss_family == AF_INET6));
		for (size_t k = 0; k < used; k++) {
			size_t u2;
			FUZZ_REQUIRE(proxy_protocol_parse(data, k, &pi, &u2, &err) == PP_MORE);
		}
	} else if (r == PP_BAD) {
		FUZZ_REQUIRE(err != NULL);
		uint8_t *more = malloc(size + 8);
		memcpy(more, data, size);
		memset(more + size, 0x41, 8);
		size_t u2;
		FUZZ_REQUIRE(proxy_protocol_parse(more, size + 8, &pi, &u2, &err) == PP_BAD);
		free(more);
	} else {
		FUZZ_REQUIRE(used == 0 && size < PROXY_PROTOCOL_MAX);
	}
	return 0;
}

#include "tests/fuzz/fuzz_main.h"
