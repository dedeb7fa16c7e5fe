#include "common/config.h"

#include "common/base.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>

/* A source is one config_load_file call or the set of config_set calls; it
 * decides whether a LIST assignment replaces or appends and whether a
 * repeated key is a duplicate. */
#define SOURCE_DEFAULT 0u
#define SOURCE_SET UINT32_MAX
#define CONFIG_LINE_MAX 4096
#define CONFIG_HOST_MAX 256

struct config_value {
	int64_t num;	/* BOOL, INT, SIZE, DURATION */
	char *str;	/* STRING, ADDR */
	char **items;	/* LIST */
	size_t n_items;
	bool is_set;
	uint32_t source;
	unsigned line;
};

struct config {
	const struct config_def *defs;
	struct config_value *vals;
	size_t n;
	uint32_t last_source;
	char error[1024];
};

static _Thread_local char addr_error[512];

static const char *const type_names[] = {
	[CONFIG_BOOL] = "bool",	    [CONFIG_INT] = "int",
	[CONFIG_SIZE] = "size",	    [CONFIG_DURATION] = "duration",
	[CONFIG_STRING] = "string", [CONFIG_ADDR] = "addr",
	[CONFIG_LIST] = "list",
};

static _Noreturn void __attribute__((format(printf, 1, 2)))
config_bug(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("config: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

/* Stores "where: message" (or just the message) and returns -1. */
static int __attribute__((format(printf, 3, 4)))
config_fail(struct config *cfg, const char *where, const char *fmt, ...)
{
	size_t off = 0;
	if (where) {
		int n = snprintf(cfg->error, sizeof(cfg->error), "%s: ", where);
		off = n > 0 ? MIN((size_t)n, sizeof(cfg->error) - 1) : 0;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cfg->error + off, sizeof(cfg->error) - off, fmt, ap);
	va_end(ap);
	return -1;
}

static int __attribute__((format(printf, 2, 3)))
addr_fail(const char **error_r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(addr_error, sizeof(addr_error), fmt, ap);
	va_end(ap);
	if (error_r)
		*error_r = addr_error;
	return -1;
}

static ssize_t config_find(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n; i++)
		if (strcmp(cfg->defs[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

static const struct config_value *
config_lookup(const struct config *cfg, const char *name, enum config_type type)
{
	ssize_t i = config_find(cfg, name);
	if (i < 0)
		config_bug("no key '%s' in the table", name);
	enum config_type t = cfg->defs[i].type;
	if (t != type && !(type == CONFIG_STRING && t == CONFIG_ADDR))
		config_bug("key '%s' is a %s, not a %s", name, type_names[t],
			   type_names[type]);
	return &cfg->vals[i];
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static char *trim(char *s)
{
	while (is_blank(*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && is_blank(s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Digits only, no sign; NULL on overflow past INT64_MAX. */
static const char *parse_digits(const char *s, int64_t *v_r)
{
	if (!isdigit((unsigned char)*s))
		return NULL;
	int64_t v = 0;
	for (; isdigit((unsigned char)*s); s++) {
		int d = *s - '0';
		if (v > (INT64_MAX - d) / 10)
			return NULL;
		v = v * 10 + d;
	}
	*v_r = v;
	return s;
}

static const char *parse_bool(const char *s, int64_t *v_r)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*v_r = 1;
			return NULL;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*v_r = 0;
			return NULL;
		}
	}
	return "expected yes/no, true/false, on/off or 1/0";
}

static const char *parse_int(const char *s, int64_t *v_r)
{
	bool neg = *s == '-';
	const char *p = (*s == '-' || *s == '+') ? s + 1 : s;
	int64_t v;
	const char *end = parse_digits(p, &v);
	if (!end) {
		/* INT64_MIN does not fit the positive accumulator. */
		if (neg && strcmp(p, "9223372036854775808") == 0) {
			*v_r = INT64_MIN;
			return NULL;
		}
		return isdigit((unsigned char)*p) ? "number too large"
						  : "expected an integer";
	}
	if (*end)
		return "expected an integer";
	*v_r = neg ? -v : v;
	return NULL;
}

static const char *parse_size(const char *s, int64_t *v_r)
{
	static const char usage[] = "expected a size like 4096, 512k, 10M or 1G";
	int64_t v;
	const char *p = parse_digits(s, &v);
	if (!p)
		return isdigit((unsigned char)*s) ? "size too large" : usage;
	int shift = 0;
	switch (tolower((unsigned char)*p)) {
	case 'k': shift = 10; break;
	case 'm': shift = 20; break;
	case 'g': shift = 30; break;
	case 't': shift = 40; break;
	}
	if (shift)
		p++;
	if (*p && strcasecmp(p, "b") != 0 && !(shift && strcasecmp(p, "ib") == 0))
		return usage;
	if (v > (INT64_MAX >> shift))
		return "size too large";
	*v_r = v << shift;
	return NULL;
}

static const struct {
	const char *unit;
	int64_t ms;
} duration_units[] = {
	{ "d", 86400000 }, { "h", 3600000 }, { "m", 60000 },
	{ "s", 1000 },	   { "ms", 1 },
};

static const char *parse_duration(const char *s, int64_t *v_r)
{
	int64_t v;
	const char *p = parse_digits(s, &v);
	if (!p)
		return isdigit((unsigned char)*s)
			       ? "duration too large"
			       : "expected a duration like 500ms, 30s, 5m or 1h";
	if (*p == '\0') {
		if (v != 0)
			return "missing unit (ms, s, m, h or d)";
		*v_r = 0;
		return NULL;
	}
	for (size_t i = 0; i < ARRAY_LEN(duration_units); i++) {
		if (strcmp(p, duration_units[i].unit) != 0)
			continue;
		if (v > INT64_MAX / duration_units[i].ms)
			return "duration too large";
		*v_r = v * duration_units[i].ms;
		return NULL;
	}
	return "unknown unit (use ms, s, m, h or d)";
}

static void format_num(char *out, size_t size, enum config_type type, int64_t v)
{
	if (type == CONFIG_BOOL) {
		snprintf(out, size, "%s", v ? "yes" : "no");
	} else if (type == CONFIG_SIZE && v != 0) {
		static const char units[] = "kMGT";
		int u = -1;
		while (u < 3 && v % 1024 == 0) {
			v /= 1024;
			u++;
		}
		if (u < 0)
			snprintf(out, size, "%" PRId64, v);
		else
			snprintf(out, size, "%" PRId64 "%c", v, units[u]);
	} else if (type == CONFIG_DURATION && v != 0) {
		size_t i = 0;
		while (v % duration_units[i].ms != 0)
			i++;
		snprintf(out, size, "%" PRId64 "%s", v / duration_units[i].ms,
			 duration_units[i].unit);
	} else {
		snprintf(out, size, "%" PRId64, v);
	}
}

static void free_items(struct config_value *v)
{
	for (size_t i = 0; i < v->n_items; i++)
		free(v->items[i]);
	free(v->items);
	v->items = NULL;
	v->n_items = 0;
}

/* Splits on commas into v (replacing or appending); fails on empty items. */
static const char *parse_list(const char *s, struct config_value *v, bool replace)
{
	char *copy = xstrdup(s);
	char *text = trim(copy);
	char **items = NULL;
	size_t n_new = 0;
	const char *err = NULL;
	if (*text != '\0') {
		size_t n_max = 1;
		for (const char *p = text; *p; p++)
			n_max += *p == ',';
		items = xmalloc(n_max * sizeof(char *));
		for (char *p = text, *next; p && !err; p = next) {
			char *comma = strchr(p, ',');
			next = comma ? comma + 1 : NULL;
			if (comma)
				*comma = '\0';
			char *item = trim(p);
			if (*item == '\0')
				err = "empty item in list";
			items[n_new++] = item;
		}
	}
	if (!err) {
		if (replace)
			free_items(v);
		v->items = xrealloc(v->items, (v->n_items + n_new) * sizeof(char *));
		for (size_t i = 0; i < n_new; i++)
			v->items[v->n_items++] = xstrdup(items[i]);
	}
	free(items);
	free(copy);
	return err;
}

static bool has_control(const char *s)
{
	for (; *s; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return true;
	return false;
}

static int config_assign(struct config *cfg, size_t idx, const char *value,
			 uint32_t source, unsigned line, const char *where)
{
	const struct config_def *d = &cfg->defs[idx];
	struct config_value *v = &cfg->vals[idx];

	if (has_control(value))
		return config_fail(cfg, where, "control character in value for '%s'",
				   d->name);
	if (d->type != CONFIG_LIST && v->source == source && source != SOURCE_SET &&
	    source != SOURCE_DEFAULT)
		return config_fail(cfg, where, "duplicate key '%s' (already set on line %u)",
				   d->name, v->line);

	const char *err = NULL;
	int64_t num = 0;
	switch (d->type) {
	case CONFIG_BOOL:
		err = parse_bool(value, &num);
		break;
	case CONFIG_INT:
		err = parse_int(value, &num);
		break;
	case CONFIG_SIZE:
		err = parse_size(value, &num);
		break;
	case CONFIG_DURATION:
		err = parse_duration(value, &num);
		break;
	case CONFIG_STRING: {
		char *copy = xstrdup(value); /* value may be v->str itself */
		free(v->str);
		v->str = copy;
		break;
	}
	case CONFIG_ADDR: {
		char host[CONFIG_HOST_MAX];
		uint16_t port;
		const char *aerr;
		if (config_split_addr(value, host, sizeof(host), &port, &aerr) < 0)
			return config_fail(cfg, where, "invalid address for '%s': %s",
					   d->name, aerr);
		char *copy = xstrdup(value);
		free(v->str);
		v->str = copy;
		break;
	}
	case CONFIG_LIST:
		err = parse_list(value, v, v->source != source);
		break;
	}
	if (err)
		return config_fail(cfg, where, "invalid value '%.200s' for '%s': %s",
				   value, d->name, err);

	if (d->type <= CONFIG_DURATION) {
		if ((d->min != 0 || d->max != 0) && (num < d->min || num > d->max)) {
			char lo[32], hi[32];
			format_num(lo, sizeof(lo), d->type, d->min);
			format_num(hi, sizeof(hi), d->type, d->max);
			return config_fail(cfg, where,
					   "value %.200s for '%s' out of range [%s, %s]",
					   value, d->name, lo, hi);
		}
		v->num = num;
	}
	v->is_set = true;
	v->source = source;
	v->line = line;
	return 0;
}

struct config *config_new(const struct config_def *defs, size_t n)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));
	cfg->defs = defs;
	cfg->n = n;
	cfg->vals = xcalloc(n, sizeof(*cfg->vals));
	for (size_t i = 0; i < n; i++) {
		const struct config_def *d = &defs[i];
		if (!d->name || !*d->name || (unsigned)d->type >= ARRAY_LEN(type_names))
			config_bug("bad definition at index %zu", i);
		for (const char *p = d->name; *p; p++)
			if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
				config_bug("bad character in key '%s'", d->name);
		if (config_find(cfg, d->name) != (ssize_t)i)
			config_bug("key '%s' defined twice", d->name);
		if (d->min > d->max ||
		    ((d->type == CONFIG_SIZE || d->type == CONFIG_DURATION) && d->min < 0))
			config_bug("bad range for '%s'", d->name);
		if (d->default_value &&
		    config_assign(cfg, i, d->default_value, SOURCE_DEFAULT, 0, "default") < 0)
			config_bug("%s", cfg->error);
	}
	return cfg;
}

void config_free(struct config **cfgp)
{
	struct config *cfg = *cfgp;
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n; i++) {
		free(cfg->vals[i].str);
		free_items(&cfg->vals[i]);
	}
	free(cfg->vals);
	free(cfg);
	*cfgp = NULL;
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[65];
	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
			row[j] = MIN(MIN(row[j] + 1, row[j - 1] + 1), diag + cost);
			diag = up;
		}
	}
	return row[lb];
}

static int unknown_key(struct config *cfg, const char *where, const char *key)
{
	const char *best = NULL;
	size_t best_d = 3; /* suggest only near misses */
	for (size_t i = 0; i < cfg->n; i++) {
		size_t dist = edit_distance(key, cfg->defs[i].name);
		if (dist < best_d) {
			best_d = dist;
			best = cfg->defs[i].name;
		}
	}
	if (best)
		return config_fail(cfg, where, "unknown key '%.200s' (did you mean '%s'?)",
				   key, best);
	return config_fail(cfg, where, "unknown key '%.200s'", key);
}

/* In place: "..." with \" and \\ escapes, nothing after the closing quote. */
static const char *unquote(char *s)
{
	char *out = s;
	for (const char *p = s + 1;; p++) {
		if (*p == '\0')
			return "unterminated quote";
		if (*p == '"') {
			if (p[1] != '\0')
				return "text after closing quote";
			*out = '\0';
			return NULL;
		}
		if (*p == '\\') {
			p++;
			if (*p != '"' && *p != '\\')
				return "unknown escape (only \\\" and \\\\)";
		}
		*out++ = *p;
	}
}

static int config_load_line(struct config *cfg, char *line, uint32_t source,
			    unsigned lineno, const char *where)
{
	char *s = trim(line);
	if (*s == '\0' || *s == '#')
		return 0;
	char *eq = strchr(s, '=');
	if (!eq)
		return config_fail(cfg, where, "expected 'key = value'");
	*eq = '\0';
	char *key = trim(s);
	char *value = trim(eq + 1);
	if (*key == '\0')
		return config_fail(cfg, where, "missing key before '='");
	ssize_t idx = config_find(cfg, key);
	if (idx < 0)
		return unknown_key(cfg, where, key);
	if (*value == '"') {
		const char *err = unquote(value);
		if (err)
			return config_fail(cfg, where, "value for '%s': %s", key, err);
	}
	return config_assign(cfg, (size_t)idx, value, source, lineno, where);
}

int config_load_file(struct config *cfg, const char *path, const char **error_r)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		config_fail(cfg, NULL, "%s: %s", path, strerror(errno));
		*error_r = cfg->error;
		return -1;
	}
	uint32_t source = ++cfg->last_source;
	char *line = NULL;
	size_t line_cap = 0;
	ssize_t n;
	unsigned lineno = 0;
	int ret = 0;
	char where[512];
	while (ret == 0 && (n = getline(&line, &line_cap, f)) >= 0) {
		lineno++;
		snprintf(where, sizeof(where), "%s:%u", path, lineno);
		size_t len = (size_t)n;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		char *s = line;
		if (lineno == 1 && len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
			s += 3;
			len -= 3;
		}
		if (len > CONFIG_LINE_MAX)
			ret = config_fail(cfg, where, "line too long (max %d)", CONFIG_LINE_MAX);
		else if (strlen(s) != len || has_control(s))
			ret = config_fail(cfg, where, "control character or NUL in line");
		else
			ret = config_load_line(cfg, s, source, lineno, where);
	}
	if (ret == 0 && ferror(f))
		ret = config_fail(cfg, NULL, "%s: read error", path);
	free(line);
	fclose(f);
	if (ret < 0)
		*error_r = cfg->error;
	return ret;
}

int config_set(struct config *cfg, const char *key, const char *value,
	       const char **error_r)
{
	ssize_t idx = config_find(cfg, key);
	int ret = idx < 0 ? unknown_key(cfg, NULL, key)
			  : config_assign(cfg, (size_t)idx, value, SOURCE_SET, 0, NULL);
	if (ret < 0)
		*error_r = cfg->error;
	return ret;
}

int config_set_arg(struct config *cfg, const char *arg, const char **error_r)
{
	const char *eq = strchr(arg, '=');
	if (!eq || eq == arg) {
		config_fail(cfg, NULL, "expected key=value, got '%.200s'", arg);
		*error_r = cfg->error;
		return -1;
	}
	char *key = xmalloc((size_t)(eq - arg) + 1);
	memcpy(key, arg, (size_t)(eq - arg));
	key[eq - arg] = '\0';
	int ret = config_set(cfg, trim(key), eq + 1, error_r);
	free(key);
	return ret;
}

bool config_is_set(const struct config *cfg, const char *name)
{
	ssize_t i = config_find(cfg, name);
	if (i < 0)
		config_bug("no key '%s' in the table", name);
	return cfg->vals[i].is_set;
}

int64_t config_get_int(const struct config *cfg, const char *name)
{
	return config_lookup(cfg, name, CONFIG_INT)->num;
}

uint64_t config_get_size(const struct config *cfg, const char *name)
{
	return (uint64_t)config_lookup(cfg, name, CONFIG_SIZE)->num;
}

uint64_t config_get_duration_ms(const struct config *cfg, const char *name)
{
	return (uint64_t)config_lookup(cfg, name, CONFIG_DURATION)->num;
}

bool config_get_bool(const struct config *cfg, const char *name)
{
	return config_lookup(cfg, name, CONFIG_BOOL)->num != 0;
}

const char *config_get_str(const struct config *cfg, const char *name)
{
	return config_lookup(cfg, name, CONFIG_STRING)->str;
}

const char *const *config_get_list(const struct config *cfg, const char *name,
				   size_t *count_r)
{
	const struct config_value *v = config_lookup(cfg, name, CONFIG_LIST);
	*count_r = v->n_items;
	return (const char *const *)v->items;
}

int config_get_addr(const struct config *cfg, const char *name,
		    struct sockaddr_storage *ss_r, socklen_t *len_r,
		    const char **error_r)
{
	ssize_t i = config_find(cfg, name);
	if (i < 0 || cfg->defs[i].type != CONFIG_ADDR)
		config_bug("no address key '%s' in the table", name);
	const char *s = cfg->vals[i].str;
	if (!s)
		return addr_fail(error_r, "'%s' is not set", name);
	if (config_parse_addr(s, ss_r, len_r, error_r) < 0) {
		char reason[sizeof(addr_error)];
		memcpy(reason, addr_error, sizeof(reason));
		return addr_fail(error_r, "'%s': %.400s", name, reason);
	}
	return 0;
}

/* Quotes when a plain value would not read back the same. */
static void print_value(FILE *out, const char *s)
{
	size_t n = strlen(s);
	if (n > 0 && s[0] != '"' && !is_blank(s[0]) && !is_blank(s[n - 1])) {
		fputs(s, out);
		return;
	}
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', out);
		fputc(*s, out);
	}
	fputc('"', out);
}

void config_print(const struct config *cfg, FILE *out)
{
	for (size_t i = 0; i < cfg->n; i++) {
		const struct config_def *d = &cfg->defs[i];
		const struct config_value *v = &cfg->vals[i];
		if (i > 0)
			fputc('\n', out);
		if (d->help) {
			fputs("# ", out);
			for (const char *p = d->help; *p; p++) {
				fputc(*p, out);
				if (*p == '\n')
					fputs("# ", out);
			}
			fputc('\n', out);
		}
		if (!v->is_set) {
			fprintf(out, "# %s =\n", d->name);
			continue;
		}
		fprintf(out, "%s =", d->name);
		if (d->type == CONFIG_STRING || d->type == CONFIG_ADDR) {
			fputc(' ', out);
			print_value(out, v->str);
		} else if (d->type == CONFIG_LIST) {
			struct buf b;
			buf_init(&b, 0);
			for (size_t j = 0; j < v->n_items; j++)
				buf_printf(&b, "%s%s", j ? ", " : "", v->items[j]);
			buf_append(&b, "", 1);
			if (v->n_items > 0) {
				fputc(' ', out);
				print_value(out, (const char *)b.data);
			}
			buf_cleanup(&b);
		} else {
			char num[32];
			format_num(num, sizeof(num), d->type, v->num);
			fprintf(out, " %s", num);
		}
		fputc('\n', out);
	}
}

int config_split_addr(const char *s, char *host_r, size_t host_size,
		      uint16_t *port_r, const char **error_r)
{
	const char *host, *port;
	size_t host_len;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close)
			return addr_fail(error_r, "missing ']' in '%.200s'", s);
		host = s + 1;
		host_len = (size_t)(close - host);
		if (close[1] != ':')
			return addr_fail(error_r, "expected ':port' after ']' in '%.200s'", s);
		port = close + 2;
		char tmp[INET6_ADDRSTRLEN + 1];
		struct in6_addr a6;
		if (host_len == 0 || host_len >= sizeof(tmp))
			return addr_fail(error_r, "invalid IPv6 address in '%.200s'", s);
		memcpy(tmp, host, host_len);
		tmp[host_len] = '\0';
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return addr_fail(error_r, "invalid IPv6 address '%s' in '%.200s'",
					 tmp, s);
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon)
			return addr_fail(error_r, "missing ':port' in '%.200s'", s);
		host = s;
		host_len = (size_t)(colon - s);
		if (memchr(s, ':', host_len))
			return addr_fail(error_r,
					 "IPv6 address in '%.200s' must be in brackets, e.g. [::1]:25",
					 s);
		if (host_len == 0)
			return addr_fail(error_r,
					 "missing host in '%.200s' (0.0.0.0 or [::] for any)", s);
		for (size_t i = 0; i < host_len; i++) {
			char c = host[i];
			if (!isalnum((unsigned char)c) && c != '.' && c != '-' && c != '_')
				return addr_fail(error_r, "invalid host name in '%.200s'", s);
		}
		port = colon + 1;
	}
	if (host_len >= host_size)
		return addr_fail(error_r, "host too long in '%.200s'", s);
	size_t plen = strlen(port);
	unsigned long p = 0;
	bool ok = plen > 0 && plen <= 5;
	for (size_t i = 0; ok && i < plen; i++) {
		ok = isdigit((unsigned char)port[i]);
		p = p * 10 + (unsigned long)(port[i] - '0');
	}
	if (!ok || p > 65535)
		return addr_fail(error_r, "invalid port '%.20s' in '%.200s' (0-65535)",
				 port, s);
	memcpy(host_r, host, host_len);
	host_r[host_len] = '\0';
	*port_r = (uint16_t)p;
	return 0;
}

int config_parse_addr(const char *s, struct sockaddr_storage *ss_r,
		      socklen_t *len_r, const char **error_r)
{
	char host[CONFIG_HOST_MAX];
	uint16_t port;
	if (config_split_addr(s, host, sizeof(host), &port, error_r) < 0)
		return -1;
	memset(ss_r, 0, sizeof(*ss_r));
	if (s[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss_r;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		inet_pton(AF_INET6, host, &sin6->sin6_addr); /* checked by split */
		*len_r = sizeof(*sin6);
		return 0;
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)ss_r;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	if (strcasecmp(host, "localhost") == 0) {
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
		return addr_fail(error_r,
				 "'%s' is not a numeric IP address (host names are not resolved)",
				 host);
	}
	*len_r = sizeof(*sin);
	return 0;
}
