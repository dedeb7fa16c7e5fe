/* mailctl import: users from a mailcow or Mailu export, keeping their
 * password hashes (storage/pwhash.h, "Imported hashes").
 *
 * Input (a file, or stdin for "-"), one user per line, either
 *   - CSV or TSV with a header line (tab-separated when the header has a
 *     tab, else comma-separated; fields may be "quoted" with "" inside),
 *     as `mysql -e "SELECT username, password, quota, active FROM
 *     mailbox"` prints mailcow's table; or
 *   - JSON lines, one flat object per line: {"email": "...",
 *     "password_hash": "{BLF-CRYPT}$2y$...", "quota_bytes": 0,
 *     "enabled": true}.
 * Column / key names (any case): email, username, user or address; password,
 * password_hash or hash; quota, quota_bytes (bytes, 0 = unlimited);
 * active or enabled (1/0, true/false; default enabled). Lines starting
 * with '#' and empty lines are skipped.
 *
 * The domains seen are added to the directory first (idempotent, every
 * live node); each user is then created on its node with USER_ADD
 * carrying the hash, many calls in flight. A user that exists already is
 * reported and skipped, so an import can be run again. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/address.h"
#include "common/loop.h"
#include "common/redis.h"
#include "node/ctl_internal.h"
#include "proto/rpc.h"
#include "storage/pwhash.h"

#define LINE_MAX_LEN 8192
#define IMPORT_WINDOW 32

struct rec {
	unsigned line;
	char email[256];      /* canonical */
	char hash[PWHASH_STORED_MAX];
	uint64_t quota;
	bool enabled;
};

/* ---- parsing -------------------------------------------------------------- */

enum col { COL_NONE, COL_EMAIL, COL_HASH, COL_QUOTA, COL_ENABLED };

static enum col col_of(const char *name)
{
	static const struct {
		const char *name;
		enum col col;
	} names[] = {
		{ "email", COL_EMAIL }, { "username", COL_EMAIL }, { "user", COL_EMAIL },
		{ "address", COL_EMAIL }, { "password", COL_HASH }, { "password_hash", COL_HASH },
		{ "hash", COL_HASH }, { "quota", COL_QUOTA }, { "quota_bytes", COL_QUOTA },
		{ "active", COL_ENABLED }, { "enabled", COL_ENABLED },
	};
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (strcasecmp(name, names[i].name) == 0)
			return names[i].col;
	return COL_NONE;
}

/* Split one CSV/TSV line into fields (in place); returns the count or -1. */
static int split(char *line, char sep, char **f, int max)
{
	int n = 0;
	char *p = line;
	for (;;) {
		if (n == max)
			return -1;
		if (*p == '"') {
			char *o = ++p;
			f[n++] = o;
			for (;;) {
				if (!*p)
					return -1; /* unterminated quote */
				if (*p == '"' && p[1] == '"') {
					*o++ = '"';
					p += 2;
				} else if (*p == '"') {
					p++;
					break;
				} else {
					*o++ = *p++;
				}
			}
			*o = '\0';
			if (*p && *p != sep)
				return -1;
		} else {
			f[n++] = p;
			p += strcspn(p, sep == '\t' ? "\t" : ",");
		}
		if (!*p)
			return n;
		*p++ = '\0';
	}
}

static int parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !v[0]) {
		*out = true;
		return 0;
	}
	if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no")) {
		*out = false;
		return 0;
	}
	return -1;
}

static int parse_u64(const char *v, uint64_t *out)
{
	char *end;
	if (!v[0]) {
		*out = 0;
		return 0;
	}
	if (v[0] < '0' || v[0] > '9')
		return -1;
	unsigned long long x = strtoull(v, &end, 10);
	if (*end)
		return -1;
	*out = x;
	return 0;
}

/* A field into rec; returns NULL or why it is bad. */
static const char *set_field(struct rec *r, enum col col, const char *v)
{
	const char *err = NULL;
	switch (col) {
	case COL_EMAIL: {
		char owner[256];
		if (address_owner(view_cstr(v), owner, sizeof(owner), NULL, 0, &err) < 0)
			return err ? err : "bad address";
		snprintf(r->email, sizeof(r->email), "%s", owner);
		return NULL;
	}
	case COL_HASH:
		if (pwhash_import(v, r->hash, sizeof(r->hash), &err) < 0)
			return err;
		return NULL;
	case COL_QUOTA: return parse_u64(v, &r->quota) < 0 ? "quota is not a number of bytes" : NULL;
	case COL_ENABLED: return parse_bool(v, &r->enabled) < 0 ? "active/enabled is not 0 or 1" : NULL;
	default: return NULL;
	}
}

/* A tiny reader for one flat JSON object: string, number, true, false
 * and null values; nothing nested. */
struct jp {
	const char *p;
};

static void ws(struct jp *j)
{
	while (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n')
		j->p++;
}

static int put_utf8(char *o, size_t *n, size_t max, uint32_t cp)
{
	char b[4];
	size_t l;
	if (cp < 0x80) {
		b[0] = (char)cp;
		l = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		l = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		l = 3;
	} else {
		b[0] = (char)(0xf0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		l = 4;
	}
	if (*n + l >= max)
		return -1;
	memcpy(o + *n, b, l);
	*n += l;
	return 0;
}

static int hex4(const char *p, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		int c = p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -1;
		*v = *v << 4 | (uint32_t)d;
	}
	return 0;
}

static int jstring(struct jp *j, char *out, size_t max)
{
	size_t n = 0;
	if (*j->p != '"')
		return -1;
	j->p++;
	while (*j->p != '"') {
		unsigned char c = (unsigned char)*j->p;
		if (!c || c < 0x20)
			return -1;
		if (c != '\\') {
			if (n + 1 >= max)
				return -1;
			out[n++] = (char)c;
			j->p++;
			continue;
		}
		j->p++;
		uint32_t cp;
		switch (*j->p) {
		case '"': case '\\': case '/': cp = (uint32_t)*j->p; break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u':
			if (hex4(j->p + 1, &cp) < 0)
				return -1;
			j->p += 4;
			if (cp >= 0xd800 && cp < 0xdc00) {
				uint32_t lo;
				if (j->p[1] != '\\' || j->p[2] != 'u' || hex4(j->p + 3, &lo) < 0 ||
				    lo < 0xdc00 || lo > 0xdfff)
					return -1;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				j->p += 6;
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				return -1;
			}
			if (cp == 0)
				return -1;
			break;
		default: return -1;
		}
		j->p++;
		if (put_utf8(out, &n, max, cp) < 0)
			return -1;
	}
	j->p++;
	out[n] = '\0';
	return 0;
}

/* A value as text: strings unquoted, numbers and literals as written. */
static int jvalue(struct jp *j, char *out, size_t max)
{
	if (*j->p == '"')
		return jstring(j, out, max);
	size_t n = strspn(j->p, "0123456789-+.eEtruefalsn");
	if (n == 0 || n >= max)
		return -1;
	memcpy(out, j->p, n);
	out[n] = '\0';
	j->p += n;
	if (!strcmp(out, "null"))
		out[0] = '\0';
	return 0;
}

static const char *parse_json(char *line, struct rec *r)
{
	struct jp j = { line };
	char key[64], val[LINE_MAX_LEN];
	ws(&j);
	if (*j.p++ != '{')
		return "not a JSON object";
	ws(&j);
	if (*j.p == '}')
		return "empty object";
	for (;;) {
		ws(&j);
		if (jstring(&j, key, sizeof(key)) < 0)
			return "bad JSON key";
		ws(&j);
		if (*j.p++ != ':')
			return "bad JSON: ':' expected";
		ws(&j);
		if (jvalue(&j, val, sizeof(val)) < 0)
			return "bad JSON value (nested values are not read)";
		enum col col = col_of(key);
		if (col == COL_ENABLED && (!strcmp(val, "true") || !strcmp(val, "false")))
			r->enabled = val[0] == 't';
		else if (col != COL_NONE) {
			const char *err = set_field(r, col, val);
			if (err)
				return err;
		}
		ws(&j);
		if (*j.p == ',') {
			j.p++;
			continue;
		}
		if (*j.p == '}')
			break;
		return "bad JSON: ',' or '}' expected";
	}
	j.p++;
	ws(&j);
	return *j.p ? "text after the JSON object" : NULL;
}

struct input {
	FILE *f;
	bool json;
	bool header_done;
	char sep;
	enum col cols[32];
	int ncols;
	unsigned line;
};

/* Next record: 1, 0 at the end, -1 on a bad line (printed, counted). */
static int next_rec(struct input *in, struct rec *r)
{
	char buf[LINE_MAX_LEN + 2];
	while (fgets(buf, sizeof(buf), in->f)) {
		in->line++;
		size_t n = strlen(buf);
		if (n && buf[n - 1] != '\n' && !feof(in->f)) {
			fprintf(stderr, "mailctl: import: line %u: longer than %d bytes\n", in->line,
				LINE_MAX_LEN);
			int ch;
			while ((ch = fgetc(in->f)) != EOF && ch != '\n')
				;
			return -1;
		}
		buf[strcspn(buf, "\r\n")] = '\0';
		char *p = buf;
		while (*p == ' ')
			p++;
		if (!*p || *p == '#')
			continue;
		if (!in->header_done) {
			in->header_done = true;
			in->json = *p == '{';
			if (!in->json) {
				in->sep = strchr(p, '\t') ? '\t' : ',';
				char *f[32];
				int nf = split(p, in->sep, f, 32);
				bool email = false, hash = false;
				for (int i = 0; i < nf; i++) {
					char *t = f[i];
					while (*t == ' ')
						t++;
					t[strcspn(t, " ")] = '\0';
					in->cols[i] = col_of(t);
					email |= in->cols[i] == COL_EMAIL;
					hash |= in->cols[i] == COL_HASH;
				}
				in->ncols = nf;
				if (nf < 0 || !email || !hash) {
					fprintf(stderr,
						"mailctl: import: line %u: want a header line naming the "
						"email (or username) and password columns\n", in->line);
					return -2;
				}
				continue;
			}
		}
		memset(r, 0, sizeof(*r));
		r->line = in->line;
		r->enabled = true;
		const char *err = NULL;
		if (in->json) {
			err = parse_json(p, r);
		} else {
			char *f[32];
			int nf = split(p, in->sep, f, 32);
			if (nf != in->ncols)
				err = "wrong number of fields";
			for (int i = 0; !err && i < nf; i++)
				err = set_field(r, in->cols[i], f[i]);
		}
		if (!err && !r->email[0])
			err = "no email";
		if (!err && !r->hash[0])
			err = "no password hash";
		explicit_bzero(buf, sizeof(buf));
		if (err) {
			fprintf(stderr, "mailctl: import: line %u: %s\n", in->line, err);
			return -1;
		}
		return 1;
	}
	return 0;
}

/* ---- routing ----------------------------------------------------------------- */

struct routes {
	uint32_t nshards;
	int32_t *node;          /* per shard: index into addrs, -1 */
	char (*addrs)[128];
	size_t naddrs;
	const char *fixed;      /* --node */
};

static void routes_free(struct routes *rt)
{
	free(rt->node);
	free(rt->addrs);
}

/* The shard map (or each node's advertised shards) once, for every user. */
static int routes_load(struct ctl *c, struct routes *rt)
{
	memset(rt, 0, sizeof(*rt));
	if (c->node) {
		rt->fixed = c->node;
		return 0;
	}
	struct redis_client *rc = ctl_redis_open(c);
	if (!rc)
		return -1;
	struct ctl_member *m = NULL;
	struct shardmap *map = NULL;
	int n = ctl_members(c, rc, &m);
	int ret = -1;
	if (n < 0 || ctl_shardmap(c, rc, &map) < 0)
		goto out;
	rt->addrs = xcalloc((size_t)n + 1, sizeof(*rt->addrs));
	for (int i = 0; i < n; i++)
		snprintf(rt->addrs[i], sizeof(rt->addrs[i]), "%s", m[i].alive ? m[i].addr : "");
	rt->naddrs = (size_t)n;
	if (map) {
		rt->nshards = map->count;
	} else {
		for (int i = 0; i < n && !rt->nshards; i++) {
			char ns[16];
			if (m[i].alive && registry_info_get(m[i].info, "nshards", ns, sizeof(ns)) == 0)
				rt->nshards = (uint32_t)strtoul(ns, NULL, 10);
		}
	}
	if (!rt->nshards || rt->nshards > REGISTRY_MAX_SHARDS) {
		fprintf(stderr, "mailctl: no live node to import into\n");
		goto out;
	}
	rt->node = xmalloc(rt->nshards * sizeof(*rt->node));
	for (uint32_t s = 0; s < rt->nshards; s++) {
		rt->node[s] = -1;
		if (map) {
			if (map->primary[s] < 0)
				continue;
			for (int i = 0; i < n; i++)
				if (m[i].alive && strcmp(m[i].id, map->ids[map->primary[s]]) == 0)
					rt->node[s] = i;
			continue;
		}
		for (int i = 0; i < n && rt->node[s] < 0; i++) {
			char spec[256];
			if (m[i].alive && registry_info_get(m[i].info, "shards", spec, sizeof(spec)) == 0 &&
			    registry_spec_has(spec, s))
				rt->node[s] = i;
		}
	}
	ret = 0;
out:
	shardmap_free(&map);
	free(m);
	redis_client_free(&rc);
	return ret;
}

static const char *route(const struct routes *rt, const char *email)
{
	if (rt->fixed)
		return rt->fixed;
	int32_t i = rt->node[address_shard(view_cstr(email), rt->nshards)];
	return i >= 0 && rt->addrs[i][0] ? rt->addrs[i] : NULL;
}

/* ---- sending ----------------------------------------------------------------- */

struct peer {
	char addr[128];
	struct rpc_client *cl;
};

struct import {
	struct ctl *c;
	struct peer *peers;
	size_t npeers;
	unsigned inflight;
	unsigned done, created, existed, failed;
};

struct pending {
	struct import *im;
	struct rec r;
};

static void on_added(void *arg, enum rpc_status st, const ProtobufCMessage *reply,
		     const Mail__Rpc__ErrorReply *err)
{
	struct pending *p = arg;
	struct import *im = p->im;
	UNUSED(reply);
	im->inflight--;
	if (st == RPC_OK) {
		im->created++;
		if (!im->c->json)
			printf("created %s\n", p->r.email);
	} else if (err && strstr(err->message, "exists")) {
		im->existed++;
		fprintf(stderr, "mailctl: import: line %u: %s exists already: skipped\n", p->r.line,
			p->r.email);
	} else {
		im->failed++;
		fprintf(stderr, "mailctl: import: line %u: %s: %s%s%s\n", p->r.line, p->r.email,
			rpc_status_str(st), err ? ": " : "", err ? err->message : "");
	}
	explicit_bzero(&p->r, sizeof(p->r));
	free(p);
}

static bool window_open(void *arg)
{
	return ((struct import *)arg)->inflight < IMPORT_WINDOW;
}

static bool all_done(void *arg)
{
	return ((struct import *)arg)->inflight == 0;
}

static struct rpc_client *peer(struct import *im, const char *addr)
{
	for (size_t i = 0; i < im->npeers; i++)
		if (strcmp(im->peers[i].addr, addr) == 0)
			return im->peers[i].cl;
	const char *err = NULL;
	struct rpc_client_config cc = { .addr = addr, .max_frame = 1 << 20,
					.connect_timeout_ms = im->c->timeout_ms };
	struct rpc_client *cl = rpc_client_new(im->c->loop, &cc, &err);
	if (!cl)
		return NULL;
	im->peers = xrealloc(im->peers, (im->npeers + 1) * sizeof(*im->peers));
	snprintf(im->peers[im->npeers].addr, sizeof(im->peers[0].addr), "%s", addr);
	im->peers[im->npeers++].cl = cl;
	return cl;
}

static int add_domains(struct ctl *c, char (*domains)[256], size_t n)
{
	struct redis_client *rc = NULL;
	char (*addrs)[128] = NULL;
	size_t naddrs = 0;
	if (c->node) {
		addrs = xcalloc(1, sizeof(*addrs));
		snprintf(addrs[0], sizeof(addrs[0]), "%s", c->node);
		naddrs = 1;
	} else {
		rc = ctl_redis_open(c);
		if (!rc)
			return -1;
		struct ctl_member *m = NULL;
		int nm = ctl_members(c, rc, &m);
		redis_client_free(&rc);
		if (nm < 0)
			return -1;
		addrs = xcalloc((size_t)nm + 1, sizeof(*addrs));
		for (int i = 0; i < nm; i++)
			if (m[i].alive)
				snprintf(addrs[naddrs++], sizeof(addrs[0]), "%s", m[i].addr);
		free(m);
	}
	int ret = 0;
	for (size_t d = 0; d < n; d++) {
		for (size_t i = 0; i < naddrs; i++) {
			Mail__Rpc__DomainRequest req = MAIL__RPC__DOMAIN_REQUEST__INIT;
			req.name = domains[d];
			ProtobufCMessage *rep;
			if (ctl_call(c, addrs[i], RPC_METHOD_DOMAIN_ADD, &req.base, c->timeout_ms, &rep,
				     NULL, NULL, 0))
				ret = -1;
			ctl_free_reply(&rep);
		}
	}
	free(addrs);
	return ret;
}

int ctl_cmd_import(struct ctl *c, int argc, char **argv)
{
	const char *path = NULL;
	bool domains = true, dry = false, bad_arg = false;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--no-domains") == 0)
			domains = false;
		else if (strcmp(argv[i], "--dry-run") == 0)
			dry = true;
		else if (!path && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0))
			path = argv[i];
		else
			bad_arg = true;
	}
	if (!path || bad_arg) {
		fprintf(stderr, "usage: mailctl import FILE|- [--dry-run] [--no-domains]\n");
		return CTL_USAGE;
	}
	struct input in = { .f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r") };
	if (!in.f) {
		fprintf(stderr, "mailctl: import: cannot open %s\n", path);
		return CTL_USAGE;
	}
	/* Read everything first: bad lines are reported before anything is
	 * written, and the domains are known up front. */
	struct rec *recs = NULL;
	size_t n = 0, cap = 0;
	unsigned bad = 0;
	for (;;) {
		struct rec r;
		int k = next_rec(&in, &r);
		if (k == 0)
			break;
		if (k == -2) {
			bad++;
			break;
		}
		if (k < 0) {
			bad++;
			continue;
		}
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			recs = xrealloc(recs, cap * sizeof(*recs));
		}
		recs[n++] = r;
		explicit_bzero(&r, sizeof(r));
	}
	if (in.f != stdin)
		fclose(in.f);
	int status = CTL_OK;
	if (bad) {
		fprintf(stderr, "mailctl: import: %u bad line(s); nothing imported\n", bad);
		status = CTL_FAIL;
		goto out;
	}
	if (dry) {
		for (size_t i = 0; i < n; i++)
			printf("%s %s quota=%llu%s\n", recs[i].email, pwhash_scheme(recs[i].hash),
			       (unsigned long long)recs[i].quota, recs[i].enabled ? "" : " disabled");
		printf("%zu users would be imported\n", n);
		goto out;
	}
	if (domains) {
		char (*dl)[256] = xcalloc(n + 1, sizeof(*dl));
		size_t nd = 0;
		for (size_t i = 0; i < n; i++) {
			const char *d = strrchr(recs[i].email, '@') + 1;
			size_t k;
			for (k = 0; k < nd && strcmp(dl[k], d) != 0; k++)
				;
			if (k == nd)
				snprintf(dl[nd++], sizeof(dl[0]), "%s", d);
		}
		int r = add_domains(c, dl, nd);
		free(dl);
		if (r < 0) {
			status = CTL_FAIL;
			goto out;
		}
	}
	struct routes rt;
	if (routes_load(c, &rt) < 0) {
		status = CTL_FAIL;
		goto out;
	}
	struct import im = { .c = c };
	for (size_t i = 0; i < n; i++) {
		const char *addr = route(&rt, recs[i].email);
		struct rpc_client *cl = addr ? peer(&im, addr) : NULL;
		if (!cl) {
			fprintf(stderr, "mailctl: import: line %u: %s: no live node serves its shard\n",
				recs[i].line, recs[i].email);
			im.failed++;
			continue;
		}
		loop_run_until(c->loop, window_open, &im, 60000);
		struct pending *p = xcalloc(1, sizeof(*p));
		p->im = &im;
		p->r = recs[i];
		Mail__Rpc__UserAddRequest req = MAIL__RPC__USER_ADD_REQUEST__INIT;
		req.user = p->r.email;
		req.password_hash = p->r.hash;
		req.quota_bytes = p->r.quota;
		req.disabled = !p->r.enabled;
		im.inflight++;
		rpc_client_call(cl, RPC_METHOD_USER_ADD, &req.base, 30000, on_added, p);
	}
	loop_run_until(c->loop, all_done, &im, 60000);
	for (size_t i = 0; i < im.npeers; i++)
		rpc_client_free(&im.peers[i].cl);
	free(im.peers);
	routes_free(&rt);
	if (c->json)
		printf("{\"created\":%u,\"existed\":%u,\"failed\":%u}\n", im.created, im.existed,
		       im.failed);
	else
		printf("imported %u users (%u existed already, %u failed)\n", im.created, im.existed,
		       im.failed);
	status = im.failed ? CTL_FAIL : CTL_OK;
out:
	if (recs)
		explicit_bzero(recs, n * sizeof(*recs));
	free(recs);
	return status;
}
