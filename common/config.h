/* One configuration format for every daemon.
 *
 *   # comment (only at the start of a line, after optional blanks)
 *   smtp.listen = 0.0.0.0:25
 *   smtp.max_message_size = 50M
 *   smtp.greeting = "mail.example.org ESMTP"
 *   imap.listen = [::]:143
 *   imap.listen = 0.0.0.0:143, 127.0.0.1:1143
 *
 * Each line is `key = value`; keys and values are trimmed. A value wrapped
 * in double quotes keeps its inner blanks and may use \" and \\; any other
 * value is taken literally ('#' inside a value is not a comment). Control
 * characters other than tab are rejected. A non-LIST key set twice in one
 * file is an error; later sources (another file, config_set) override.
 *
 * Types:
 *   BOOL      yes/no, true/false, on/off, 1/0 (case-insensitive)
 *   INT       decimal int64
 *   SIZE      bytes, optional binary suffix k/M/G/T (1k = 1024), e.g. 10M
 *   DURATION  stored in ms; needs a unit unless 0: 500ms, 30s, 5m, 1h, 2d
 *   STRING    any text
 *   ADDR      host:port, IPv6 in brackets ([::1]:25); port 0..65535
 *   LIST      strings; comma-separated and/or repeated keys. The first
 *             assignment from a source (one file, or config_set calls)
 *             replaces the previous value, later ones in that source
 *             append; `key =` sets an empty list.
 *
 * The daemon declares a table of struct config_def; defaults are parsed and
 * validated by config_new (a bad table aborts: it is a programming error, as
 * is asking a getter for a name not in the table or of another type).
 * Getters only read: once loaded, one config may be shared by all threads. */
#ifndef COMMON_CONFIG_H
#define COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

enum config_type {
	CONFIG_BOOL,
	CONFIG_INT,
	CONFIG_SIZE,
	CONFIG_DURATION,
	CONFIG_STRING,
	CONFIG_ADDR,
	CONFIG_LIST,
};

struct config_def {
	const char *name;
	enum config_type type;
	/* Written as in the file. NULL leaves the key unset: config_is_set()
	 * is false, numbers read 0, strings NULL, lists empty. */
	const char *default_value;
	/* Inclusive bounds for INT, SIZE (bytes) and DURATION (ms); both 0
	 * means unbounded. Ignored for other types. */
	int64_t min;
	int64_t max;
	const char *help;
};

struct config;

/* `defs` is borrowed and must outlive the config. */
struct config *config_new(const struct config_def *defs, size_t n);
void config_free(struct config **cfgp);

/* Loads a file over the current values. Returns 0, or -1 with *error_r set
 * to "FILE:LINE: message" (e.g. "mailnode.conf:12: unknown key
 * 'smtp.lisen'"). Error strings live in the config object until the next
 * call on it. On error the config may be partly updated: discard it. */
int config_load_file(struct config *cfg, const char *path, const char **error_r);

/* Sets one key to a literal value (no quote processing), as for a
 * command-line override. Returns 0 or -1 with *error_r. */
int config_set(struct config *cfg, const char *key, const char *value,
	       const char **error_r);
/* Same, from a "key=value" argument (e.g. the text after --set). */
int config_set_arg(struct config *cfg, const char *arg, const char **error_r);

bool config_is_set(const struct config *cfg, const char *name);
int64_t config_get_int(const struct config *cfg, const char *name);
uint64_t config_get_size(const struct config *cfg, const char *name);
uint64_t config_get_duration_ms(const struct config *cfg, const char *name);
bool config_get_bool(const struct config *cfg, const char *name);
/* STRING or ADDR; NULL when unset. Borrowed from the config. */
const char *config_get_str(const struct config *cfg, const char *name);
/* Borrowed array of *count_r strings (not NULL-terminated). */
const char *const *config_get_list(const struct config *cfg, const char *name,
				   size_t *count_r);
/* An ADDR key resolved with config_parse_addr. */
int config_get_addr(const struct config *cfg, const char *name,
		    struct sockaddr_storage *ss_r, socklen_t *len_r,
		    const char **error_r);

/* Writes every key with its effective value in the file format, preceded
 * by its help as a comment; unset keys are written commented out. The
 * output loads back to the same values. */
void config_print(const struct config *cfg, FILE *out);

/* Splits "host:port" / "[v6]:port". host_r gets the host without brackets.
 * Only syntax is checked (a host name is accepted). Returns 0 or -1 with
 * *error_r in a thread-local buffer valid until the next call. */
int config_split_addr(const char *s, char *host_r, size_t host_size,
		      uint16_t *port_r, const char **error_r);
/* Parses "1.2.3.4:25", "[::1]:25" or "localhost:25" (127.0.0.1) into a
 * sockaddr; names are not resolved. Errors as config_split_addr. */
int config_parse_addr(const char *s, struct sockaddr_storage *ss_r,
		      socklen_t *len_r, const char **error_r);

#endif
