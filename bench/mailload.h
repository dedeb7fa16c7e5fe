/* mailbench's protocol loads: IMAP (a weighted command mix, or logins),
 * POP3 (a weighted mix, or logins), many idle IMAP sessions for memory
 * figures, and the setup step that creates users and fills their INBOXes.
 *
 * Every load runs on one io_uring loop (common/loop.h), as plaintext or
 * implicit TLS through the loop's TLS client, bounded by time and/or count,
 * and reports through bench/loadstat.h. The entry points return a process
 * exit status: 0 the run completed without errors, 1 it had errors (or
 * could not run), 2 a usage error. */
#ifndef BENCH_MAILLOAD_H
#define BENCH_MAILLOAD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "common/base.h"

/* Commands of the IMAP mix (--mix NAME=WEIGHT,...). */
enum imap_mix {
	IMIX_SELECT,
	IMIX_FETCH_FLAGS,
	IMIX_FETCH_HEADERS,
	IMIX_FETCH_BODY,
	IMIX_STORE,
	IMIX_SEARCH,
	IMIX_APPEND,
	IMIX_COPY,
	IMIX_MOVE,
	IMIX_EXPUNGE,
	IMIX_IDLE,
	IMIX_NOOP,
	IMIX_LIST,
	IMIX_STATUS,
	IMIX_LOGOUT, /* end the session: LOGOUT, then a new LOGIN */
	IMIX_N
};

/* Commands of the POP3 mix. */
enum pop3_mix {
	PMIX_STAT,
	PMIX_LIST,
	PMIX_UIDL,
	PMIX_RETR,
	PMIX_TOP,
	PMIX_DELE,
	PMIX_NOOP,
	PMIX_QUIT, /* end the session: QUIT, then a new login */
	PMIX_N
};

#define LOAD_MAX_PIDS 8

struct load_config {
	/* server */
	const char *target; /* host:port */
	struct sockaddr_storage sa;
	socklen_t sa_len;
	bool tls;             /* implicit TLS */
	const char *tls_ca;   /* verify the server against this CA (else no check) */
	const char *servername;
	/* users: pattern with one %d, over [user_lo, user_hi] */
	const char *user_pattern;
	unsigned user_lo, user_hi;
	const char *password;
	/* load shape */
	unsigned clients;
	unsigned duration_s;  /* 0: bounded by count only */
	uint64_t count;       /* mix commands (or logins); 0: by time only */
	unsigned session_cmds;/* commands per session, then log out; 0: keep open */
	bool logins;          /* sessions of connect, login, logout only */
	unsigned weights[16];
	bool check;
	unsigned fetch_range; /* messages per FETCH of flags/headers */
	unsigned msg_size;    /* APPEND / populate message size */
	unsigned idle_ms;     /* IDLE in the mix: how long to hold it */
	const char *mailbox;
	const char *copy_to;  /* COPY/MOVE destination */
	unsigned timeout_ms;  /* per reply */
	bool progress, json;
	/* setup */
	unsigned populate;    /* fill each INBOX to this many messages, then exit */
	const char *rpc;      /* node RPC address: create users, deliver by RPC */
	/* idle */
	unsigned connections, concurrency, sources, hold_s, warmup;
	pid_t pids[LOAD_MAX_PIDS];
	unsigned npids;
};

int bench_imap_run(const struct load_config *cfg);
int bench_idle_run(const struct load_config *cfg);
int bench_pop3_run(const struct load_config *cfg);
/* Users over RPC (created if missing), INBOX filled by RPC deliveries. */
int bench_populate_rpc(const struct load_config *cfg);
/* The same by IMAP APPEND (users must exist). */
int bench_populate_imap(const struct load_config *cfg);

/* CLI of the modes above: argv[1] is "imap", "pop3" or "idle". */
int load_cli_main(int argc, char **argv);

/* User number idx through the pattern, into out. */
void load_user_name(const struct load_config *cfg, unsigned idx, char *out, size_t out_len);
/* A plain-text message of about `size` bytes (CRLF lines, a unique
 * Message-ID from client and n) appended to out. */
void load_message(struct buf *out, const char *to, unsigned size, unsigned client, uint64_t n);
/* VmRSS of a process in KiB, 0 if unknown. */
uint64_t load_rss_kib(pid_t pid);
/* xorshift64 */
static inline uint64_t load_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

#endif
