/* Command line of mailbench imap / pop3 / idle, and small helpers the
 * loads share (user names, generated messages, RSS of a process). */
#include "bench/mailload.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/net.h"

static const char *const imix_names[IMIX_N] = {
	[IMIX_SELECT] = "select",	 [IMIX_FETCH_FLAGS] = "fetch-flags",
	[IMIX_FETCH_HEADERS] = "fetch-headers", [IMIX_FETCH_BODY] = "fetch-body",
	[IMIX_STORE] = "store",	 [IMIX_SEARCH] = "search",
	[IMIX_APPEND] = "append",	 [IMIX_COPY] = "copy",
	[IMIX_MOVE] = "move",		 [IMIX_EXPUNGE] = "expunge",
	[IMIX_IDLE] = "idle",		 [IMIX_NOOP] = "noop",
	[IMIX_LIST] = "list",		 [IMIX_STATUS] = "status",
	[IMIX_LOGOUT] = "logout",
};

static const char *const pmix_names[PMIX_N] = {
	[PMIX_STAT] = "stat", [PMIX_LIST] = "list", [PMIX_UIDL] = "uidl", [PMIX_RETR] = "retr",
	[PMIX_TOP] = "top",   [PMIX_DELE] = "dele", [PMIX_NOOP] = "noop", [PMIX_QUIT] = "quit",
};

/* imaptest-like: mostly reads, some flag changes, appends that roughly
 * balance what expunge and move take away. */
static const unsigned imix_default[IMIX_N] = {
	[IMIX_FETCH_FLAGS] = 25, [IMIX_FETCH_HEADERS] = 15, [IMIX_FETCH_BODY] = 15,
	[IMIX_STORE] = 15,	 [IMIX_SEARCH] = 5,	    [IMIX_APPEND] = 10,
	[IMIX_COPY] = 4,	 [IMIX_MOVE] = 3,	    [IMIX_EXPUNGE] = 4,
	[IMIX_NOOP] = 4,
};

static const unsigned pmix_default[PMIX_N] = {
	[PMIX_STAT] = 5, [PMIX_LIST] = 10, [PMIX_UIDL] = 10, [PMIX_RETR] = 70, [PMIX_TOP] = 5,
};

static void usage(FILE *out, const char *mode)
{
	fprintf(out,
		"usage: mailbench %s --target HOST:PORT [options]\n"
		"\n"
		"server and users:\n"
		"  --target HOST:PORT   server to load (numeric address or localhost)\n"
		"  --tls                implicit TLS (IMAPS/POP3S); no certificate check unless\n"
		"  --tls-ca FILE        the server must chain to this CA (and match --servername)\n"
		"  --servername NAME    SNI (and the name checked with --tls-ca)\n"
		"  --user PATTERN       login names, one %%d (default user%%d@example.test)\n"
		"  --users N|A-B        user numbers 1..N or A..B (default 1-100)\n"
		"  --password PW        the users' password (default password)\n"
		"load:\n"
		"  --clients N          concurrent sessions (default 10)\n"
		"  --duration S         stop issuing commands after S seconds (default 10,\n"
		"                       or no time bound when --count is given); sessions\n"
		"                       kept open are measured from when all have logged in\n"
		"  --count N            stop after N mix commands (logins with --logins)\n"
		"  --session N          commands per session before logging out and in again\n"
		"                       (default 0: sessions kept open)\n"
		"  --logins             sessions of connect, login, logout only (logins/s)\n"
		"  --mix NAME=W,...     command weights (unlisted: 0); imap: select fetch-flags\n"
		"                       fetch-headers fetch-body store search append copy move\n"
		"                       expunge idle noop list status logout; pop3: stat list\n"
		"                       uidl retr top dele noop quit\n"
		"  --check              check every reply's syntax, the tagged completion of\n"
		"                       each command, and that UIDs, sizes and flags seen by\n"
		"                       concurrent sessions of a user agree\n"
		"  --timeout MS         longest wait for a reply (default 30000)\n"
		"imap:\n"
		"  --mailbox NAME       mailbox to SELECT (default INBOX)\n"
		"  --copy-to NAME       COPY/MOVE destination (default Trash)\n"
		"  --fetch-range N      messages per FETCH of flags or headers (default 10)\n"
		"  --size BYTES         APPEND (and --populate) message size (default 4096)\n"
		"  --idle-ms MS         how long an IDLE of the mix lasts (default 200)\n"
		"setup (then exit):\n"
		"  --populate N         fill each user's INBOX to N messages; with --rpc ADDR\n"
		"                       users are created first (password --password) and\n"
		"                       messages delivered by RPC to a mailnode, else appended\n"
		"                       over IMAP\n"
		"idle:\n"
		"  --connections N      IMAP sessions to open, each LOGIN, SELECT, IDLE\n"
		"                       (default 1000)\n"
		"  --concurrency N      sessions being set up at once (default 64)\n"
		"  --sources N          spread over source addresses 127.0.0.1..N (loopback\n"
		"                       targets; default: enough for 20,000 per address)\n"
		"  --duration S         hold the idle sessions S seconds (default 5)\n"
		"  --pid PID            report this server process's RSS before and after\n"
		"                       (repeatable: proxy and node)\n"
		"  --warmup N           N logins before the first RSS reading\n"
		"output:\n"
		"  --json               one JSON object on stdout instead of the table\n"
		"  --quiet              no progress line on stderr\n",
		mode);
}

static int bad(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "mailbench: ");
	fprintf(stderr, fmt, a, b);
	fprintf(stderr, "\n");
	return -1;
}

static int parse_u64(const char *s, const char *what, uint64_t min, uint64_t max, uint64_t *v_r)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)s[0]))
		return bad("%s: not a number: '%s'", what, s);
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max) {
		char range[64];
		snprintf(range, sizeof(range), "%" PRIu64 "..%" PRIu64, min, max);
		fprintf(stderr, "mailbench: %s: '%s' is not a number in %s\n", what, s, range);
		return -1;
	}
	*v_r = v;
	return 0;
}

static int parse_uint(const char *s, const char *what, unsigned min, unsigned max, unsigned *v_r)
{
	uint64_t v;
	if (parse_u64(s, what, min, max, &v) < 0)
		return -1;
	*v_r = (unsigned)v;
	return 0;
}

static int parse_mix(const char *s, const char *const *names, unsigned n, unsigned *w)
{
	memset(w, 0, n * sizeof(*w));
	char *copy = xstrdup(s), *save = NULL;
	int rc = 0;
	for (char *item = strtok_r(copy, ",", &save); item && rc == 0;
	     item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');
		if (!eq) {
			rc = bad("--mix: '%s' is not NAME=WEIGHT%s", item, "");
			break;
		}
		*eq = '\0';
		unsigned k;
		for (k = 0; k < n; k++)
			if (strcmp(item, names[k]) == 0)
				break;
		/* Aliases: "fetch" is fetch-flags, "login" is a new session. */
		if (k == n && names == imix_names && strcmp(item, "fetch") == 0)
			k = IMIX_FETCH_FLAGS;
		if (k == n && names == imix_names && strcmp(item, "login") == 0)
			k = IMIX_LOGOUT;
		if (k == n) {
			rc = bad("--mix: unknown command '%s'%s", item, "");
			break;
		}
		rc = parse_uint(eq + 1, "--mix weight", 0, 1000000, &w[k]);
	}
	free(copy);
	if (rc == 0) {
		unsigned sum = 0;
		for (unsigned k = 0; k < n; k++)
			sum += w[k];
		if (sum == 0)
			rc = bad("--mix: every weight is 0%s%s", "", "");
	}
	return rc;
}

static int check_pattern(const char *p)
{
	unsigned conv = 0;
	for (const char *q = p; *q; q++) {
		if (*q != '%')
			continue;
		if (q[1] == '%') {
			q++;
			continue;
		}
		if (q[1] != 'd')
			return bad("--user: only %%d may appear in the pattern: '%s'%s", p, "");
		conv++;
		q++;
	}
	if (conv != 1)
		return bad("--user: the pattern needs exactly one %%d: '%s'%s", p, "");
	if (strlen(p) > 200)
		return bad("--user: pattern too long%s%s", "", "");
	return 0;
}

static int check_name(const char *opt, const char *v)
{
	if (!*v || strlen(v) > 200)
		return bad("%s: bad mailbox name '%s'", opt, v);
	for (const char *p = v; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\' || (unsigned char)*p > 0x7e)
			return bad("%s: mailbox name must be printable ASCII without quotes or "
				   "backslashes: '%s'", opt, v);
	return 0;
}

void load_user_name(const struct load_config *cfg, unsigned idx, char *out, size_t out_len)
{
	size_t o = 0;
	for (const char *p = cfg->user_pattern; *p && o + 1 < out_len; p++) {
		if (p[0] == '%' && p[1] == '%') {
			out[o++] = '%';
			p++;
		} else if (p[0] == '%' && p[1] == 'd') {
			int n = snprintf(out + o, out_len - o, "%u", idx);
			o += n > 0 ? (size_t)n : 0;
			if (o >= out_len)
				o = out_len - 1;
			p++;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

void load_message(struct buf *out, const char *to, unsigned size, unsigned client, uint64_t n)
{
	static const char words[] =
		"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
		"incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
		"exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. ";
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	size_t start = out->len;
	buf_printf(out,
		   "From: mailbench <bench@mailbench.test>\r\n"
		   "To: <%s>\r\n"
		   "Subject: mailbench message %u.%" PRIu64 "\r\n"
		   "Message-ID: <%u.%" PRIu64 ".%ld@mailbench.test>\r\n"
		   "Date: %s\r\n"
		   "MIME-Version: 1.0\r\n"
		   "Content-Type: text/plain; charset=us-ascii\r\n"
		   "\r\n",
		   to, client, n, client, n, (long)now, date);
	size_t off = (size_t)(n * 7 + client) % (sizeof(words) - 1);
	do {
		size_t have = out->len - start;
		size_t line = 72;
		if (have + line + 2 > size)
			line = size > have + 3 ? size - have - 2 : 1;
		for (size_t i = 0; i < line; i++) {
			char ch = words[off++ % (sizeof(words) - 1)];
			buf_append(out, &ch, 1);
		}
		buf_append(out, "\r\n", 2);
	} while (out->len - start + 3 < size);
}

uint64_t load_rss_kib(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	uint64_t v = 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			v = strtoull(line + 6, NULL, 10);
	fclose(f);
	return v;
}

int load_cli_main(int argc, char **argv)
{
	const char *mode = argv[1];
	bool imap = strcmp(mode, "imap") == 0, pop3 = strcmp(mode, "pop3") == 0,
	     idle = strcmp(mode, "idle") == 0;
	struct load_config c = {
		.user_pattern = "user%d@example.test",
		.user_lo = 1,
		.user_hi = 100,
		.password = "password",
		.clients = 10,
		.timeout_ms = 30000,
		.fetch_range = 10,
		.msg_size = 4096,
		.idle_ms = 200,
		.mailbox = "INBOX",
		.copy_to = "Trash",
		.progress = true,
		.connections = 1000,
		.concurrency = 64,
	};
	if (pop3)
		memcpy(c.weights, pmix_default, sizeof(pmix_default));
	else
		memcpy(c.weights, imix_default, sizeof(imix_default));
	bool have_duration = false;
	static const struct option lo[] = {
		{ "target", required_argument, 0, 't' },
		{ "tls", no_argument, 0, 'T' },
		{ "tls-ca", required_argument, 0, 'A' },
		{ "servername", required_argument, 0, 'n' },
		{ "user", required_argument, 0, 'u' },
		{ "users", required_argument, 0, 'U' },
		{ "password", required_argument, 0, 'w' },
		{ "clients", required_argument, 0, 'c' },
		{ "duration", required_argument, 0, 'd' },
		{ "count", required_argument, 0, 'N' },
		{ "session", required_argument, 0, 'S' },
		{ "logins", no_argument, 0, 'L' },
		{ "mix", required_argument, 0, 'm' },
		{ "check", no_argument, 0, 'k' },
		{ "timeout", required_argument, 0, 'o' },
		{ "mailbox", required_argument, 0, 'b' },
		{ "copy-to", required_argument, 0, 'B' },
		{ "fetch-range", required_argument, 0, 'r' },
		{ "size", required_argument, 0, 'z' },
		{ "idle-ms", required_argument, 0, 'i' },
		{ "populate", required_argument, 0, 'P' },
		{ "rpc", required_argument, 0, 'R' },
		{ "connections", required_argument, 0, 'C' },
		{ "concurrency", required_argument, 0, 'Y' },
		{ "sources", required_argument, 0, 's' },
		{ "pid", required_argument, 0, 'p' },
		{ "warmup", required_argument, 0, 'W' },
		{ "json", no_argument, 0, 'j' },
		{ "quiet", no_argument, 0, 'q' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	int ch, rc = 0;
	optind = 2;
	opterr = 1;
	while (rc == 0 && (ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		uint64_t v;
		switch (ch) {
		case 't': c.target = optarg; break;
		case 'T': c.tls = true; break;
		case 'A': c.tls_ca = optarg; break;
		case 'n': c.servername = optarg; break;
		case 'u':
			rc = check_pattern(optarg);
			c.user_pattern = optarg;
			break;
		case 'U': {
			const char *dash = strchr(optarg, '-');
			if (!dash) {
				c.user_lo = 1;
				rc = parse_uint(optarg, "--users", 1, 10000000, &c.user_hi);
				break;
			}
			char lo_s[32];
			snprintf(lo_s, sizeof(lo_s), "%.*s", (int)MIN((size_t)(dash - optarg), 31),
				 optarg);
			rc = parse_uint(lo_s, "--users (first)", 0, UINT32_MAX - 1, &c.user_lo);
			if (rc == 0)
				rc = parse_uint(dash + 1, "--users (last)", 0, UINT32_MAX - 1,
						&c.user_hi);
			if (rc == 0 && (c.user_hi < c.user_lo || c.user_hi - c.user_lo >= 10000000))
				rc = bad("--users: '%s' is not a range A-B with A <= B (at most 10 "
					 "million users)%s", optarg, "");
			break;
		}
		case 'w':
			if (!*optarg || strchr(optarg, '\r') || strchr(optarg, '\n'))
				rc = bad("--password: empty or contains a line break%s%s", "", "");
			c.password = optarg;
			break;
		case 'c': rc = parse_uint(optarg, "--clients", 1, 100000, &c.clients); break;
		case 'd':
			rc = parse_uint(optarg, "--duration", idle ? 0 : 1, 86400, &c.duration_s);
			have_duration = true;
			break;
		case 'N': rc = parse_u64(optarg, "--count", 1, UINT64_MAX / 2, &c.count); break;
		case 'S': rc = parse_uint(optarg, "--session", 0, 100000000, &c.session_cmds); break;
		case 'L': c.logins = true; break;
		case 'm':
			rc = pop3 ? parse_mix(optarg, pmix_names, PMIX_N, c.weights)
				  : parse_mix(optarg, imix_names, IMIX_N, c.weights);
			break;
		case 'k': c.check = true; break;
		case 'o': rc = parse_uint(optarg, "--timeout", 100, 3600000, &c.timeout_ms); break;
		case 'b':
			rc = check_name("--mailbox", optarg);
			c.mailbox = optarg;
			break;
		case 'B':
			rc = check_name("--copy-to", optarg);
			c.copy_to = optarg;
			break;
		case 'r': rc = parse_uint(optarg, "--fetch-range", 1, 10000, &c.fetch_range); break;
		case 'z': rc = parse_uint(optarg, "--size", 200, 64u << 20, &c.msg_size); break;
		case 'i': rc = parse_uint(optarg, "--idle-ms", 0, 3600000, &c.idle_ms); break;
		case 'P': rc = parse_uint(optarg, "--populate", 1, 10000000, &c.populate); break;
		case 'R': c.rpc = optarg; break;
		case 'C': rc = parse_uint(optarg, "--connections", 1, 1000000, &c.connections); break;
		case 'Y': rc = parse_uint(optarg, "--concurrency", 1, 100000, &c.concurrency); break;
		case 's': rc = parse_uint(optarg, "--sources", 1, 250, &c.sources); break;
		case 'p':
			if (c.npids == LOAD_MAX_PIDS) {
				rc = bad("--pid: at most 8%s%s", "", "");
				break;
			}
			rc = parse_u64(optarg, "--pid", 1, 0x7fffffff, &v);
			c.pids[c.npids++] = (pid_t)v;
			break;
		case 'W': rc = parse_uint(optarg, "--warmup", 0, 1000000, &c.warmup); break;
		case 'j': c.json = true; break;
		case 'q': c.progress = false; break;
		case 'h': usage(stdout, mode); return 0;
		default:
			fprintf(stderr, "mailbench %s --help lists the options\n", mode);
			return 2;
		}
	}
	if (rc)
		return 2;
	if (optind < argc) {
		fprintf(stderr, "mailbench: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!c.target) {
		fprintf(stderr, "mailbench: %s needs --target HOST:PORT\n", mode);
		return 2;
	}
	const char *err = NULL;
	if (net_parse_addr(c.target, &c.sa, &c.sa_len, &err) < 0) {
		fprintf(stderr, "mailbench: --target: %s\n", err);
		return 2;
	}
	if (c.tls_ca && !c.tls) {
		fprintf(stderr, "mailbench: --tls-ca needs --tls\n");
		return 2;
	}
	if (c.rpc && !c.populate) {
		fprintf(stderr, "mailbench: --rpc is for --populate\n");
		return 2;
	}
	if (!have_duration)
		c.duration_s = idle ? 5 : (c.count ? 0 : 10);
	if (c.populate) {
		if (pop3 && !c.rpc) {
			fprintf(stderr, "mailbench: pop3 --populate needs --rpc ADDR (POP3 cannot "
					"add messages)\n");
			return 2;
		}
		if (idle) {
			fprintf(stderr, "mailbench: populate with 'mailbench imap --populate N'\n");
			return 2;
		}
		return c.rpc ? bench_populate_rpc(&c) : bench_populate_imap(&c);
	}
	if (idle) {
		if (c.sources > 1 && !(c.sa.ss_family == AF_INET &&
				       (((const uint8_t *)&((struct sockaddr_in *)&c.sa)->sin_addr)[0] ==
					127))) {
			fprintf(stderr, "mailbench: --sources needs a 127.x.y.z target\n");
			return 2;
		}
		return bench_idle_run(&c);
	}
	return imap ? bench_imap_run(&c) : bench_pop3_run(&c);
}
