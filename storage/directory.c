/* Domains and aliases in the directory shard. See directory.h.
 *
 * Keys: 'D' domain -> {version, enabled, created_ms}
 *       'A' alias  -> {version, count u16, targets (u16 length + bytes)...}
 *       'K' domain NUL selector -> {version, algorithm str16, created_ms,
 *                                   public key str16, private key PEM str16}
 * Concurrent edits of one alias are last-writer-wins (admin traffic). */
#include "storage/directory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/address.h"
#include "storage/codec.h"

#define KEY_DOMAIN 'D'
#define KEY_ALIAS 'A'
#define KEY_DKIM 'K'

static __thread char errbuf[256];

static int dfail(const char **error_r, enum storage_status *status_r, enum storage_status st,
		 const char *msg)
{
	snprintf(errbuf, sizeof(errbuf), "%s", msg);
	if (error_r)
		*error_r = errbuf;
	if (status_r)
		*status_r = st;
	return -1;
}

static void make_key(struct buf *k, char type, const char *name)
{
	k->len = 0;
	put_u8(k, (uint8_t)type);
	buf_append(k, name, strlen(name));
}

static const char *domain_of(const char *address)
{
	const char *at = strrchr(address, '@');
	return at ? at + 1 : NULL;
}

int directory_domain_add(struct shard *dir, const char *domain, enum storage_status *status_r,
			 const char **error_r)
{
	char probe[300];
	snprintf(probe, sizeof(probe), "postmaster@%s", domain);
	struct buf canon;
	buf_init(&canon, 300);
	if (strchr(domain, '@') || address_canonical(view_cstr(probe), &canon, error_r) < 0) {
		buf_cleanup(&canon);
		return dfail(error_r, status_r, ST_INVALID, "invalid domain name");
	}
	const char *d = (const char *)memchr(canon.data, '@', canon.len) + 1;
	char name[256];
	snprintf(name, sizeof(name), "%.*s", (int)(canon.len - (size_t)(d - (char *)canon.data)), d);
	buf_cleanup(&canon);
	int r = directory_domain_is_local(dir, name, error_r);
	if (r != 0)
		return r < 0 ? dfail(error_r, status_r, ST_IO, *error_r)
			     : dfail(error_r, status_r, ST_EXISTS, "domain exists");
	struct buf k, v;
	buf_init(&k, 0);
	buf_init(&v, 0);
	make_key(&k, KEY_DOMAIN, name);
	put_u8(&v, RECORD_VERSION);
	put_u8(&v, 1);
	put_u64(&v, time_real_ms());
	struct kv_op op = { .key = buf_view(&k), .value = buf_view(&v) };
	r = shard_kv_write(dir, &op, 1, error_r);
	buf_cleanup(&k);
	buf_cleanup(&v);
	if (status_r)
		*status_r = r < 0 ? ST_IO : ST_OK;
	return r;
}

int directory_domain_delete(struct shard *dir, const char *domain,
			    enum storage_status *status_r, const char **error_r)
{
	int r = directory_domain_is_local(dir, domain, error_r);
	if (r != 1)
		return r < 0 ? dfail(error_r, status_r, ST_IO, *error_r)
			     : dfail(error_r, status_r, ST_NOT_FOUND, "no such domain");
	struct buf k;
	buf_init(&k, 0);
	make_key(&k, KEY_DOMAIN, domain);
	struct kv_op op = { .key = buf_view(&k), .del = true };
	r = shard_kv_write(dir, &op, 1, error_r);
	buf_cleanup(&k);
	if (status_r)
		*status_r = r < 0 ? ST_IO : ST_OK;
	return r;
}

int directory_domain_is_local(struct shard *dir, const char *domain, const char **error_r)
{
	struct buf k, v;
	buf_init(&k, 0);
	buf_init(&v, 0);
	make_key(&k, KEY_DOMAIN, domain);
	int r = shard_kv_get(dir, buf_view(&k), &v, error_r);
	buf_cleanup(&k);
	buf_cleanup(&v);
	return r;
}

struct dom_collect {
	struct domain_info *list;
	size_t n, cap;
};

static int collect_domain(void *arg, struct view k, struct view v)
{
	struct dom_collect *c = arg;
	struct dec d = dec_make(v.ptr, v.len);
	if (get_u8(&d) != RECORD_VERSION)
		return 0;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->list = xrealloc(c->list, c->cap * sizeof(*c->list));
	}
	struct domain_info *di = &c->list[c->n++];
	snprintf(di->name, sizeof(di->name), "%.*s", (int)(k.len - 1), (const char *)k.ptr + 1);
	di->enabled = get_u8(&d) != 0;
	di->created_ms = get_u64(&d);
	return 0;
}

int directory_domain_list(struct shard *dir, struct domain_info **out, size_t *n_r,
			  const char **error_r)
{
	struct dom_collect c = { 0 };
	uint8_t p = KEY_DOMAIN;
	if (shard_kv_scan(dir, view_make(&p, 1), collect_domain, &c, error_r) < 0) {
		free(c.list);
		return -1;
	}
	*out = c.list;
	*n_r = c.n;
	return 0;
}

/* "@domain" (catch-all) or a canonical address; returns 0 with the
 * canonical form in out. */
static int canon_alias(const char *alias, char *out, size_t out_len, const char **error_r)
{
	if (alias[0] == '@') {
		char probe[300];
		snprintf(probe, sizeof(probe), "x%s", alias);
		struct buf c;
		buf_init(&c, 300);
		int r = address_canonical(view_cstr(probe), &c, error_r);
		if (r == 0)
			snprintf(out, out_len, "%.*s", (int)c.len - 1, (const char *)c.data + 1);
		buf_cleanup(&c);
		return r;
	}
	struct buf c;
	buf_init(&c, 300);
	int r = address_canonical(view_cstr(alias), &c, error_r);
	if (r == 0)
		snprintf(out, out_len, "%.*s", (int)c.len, (const char *)c.data);
	buf_cleanup(&c);
	return r;
}

int directory_alias_set(struct shard *dir, const char *alias, const char *const *targets,
			size_t n_targets, enum storage_status *status_r, const char **error_r)
{
	char name[300];
	if (canon_alias(alias, name, sizeof(name), error_r) < 0)
		return dfail(error_r, status_r, ST_INVALID, "invalid alias address");
	if (n_targets == 0 || n_targets > DIRECTORY_MAX_TARGETS)
		return dfail(error_r, status_r, ST_INVALID, "an alias needs 1..1000 targets");
	int r = directory_domain_is_local(dir, domain_of(name), error_r);
	if (r != 1)
		return r < 0 ? dfail(error_r, status_r, ST_IO, *error_r)
			     : dfail(error_r, status_r, ST_INVALID, "the alias's domain is not local");
	struct buf k, v, c;
	buf_init(&k, 0);
	buf_init(&v, 0);
	buf_init(&c, 300);
	put_u8(&v, RECORD_VERSION);
	put_u16(&v, (uint16_t)n_targets);
	for (size_t i = 0; i < n_targets; i++) {
		if (address_canonical(view_cstr(targets[i]), &c, error_r) < 0) {
			buf_cleanup(&k);
			buf_cleanup(&v);
			buf_cleanup(&c);
			return dfail(error_r, status_r, ST_INVALID, "invalid alias target");
		}
		put_bytes16(&v, c.data, c.len);
	}
	make_key(&k, KEY_ALIAS, name);
	struct kv_op op = { .key = buf_view(&k), .value = buf_view(&v) };
	r = shard_kv_write(dir, &op, 1, error_r);
	buf_cleanup(&k);
	buf_cleanup(&v);
	buf_cleanup(&c);
	if (status_r)
		*status_r = r < 0 ? ST_IO : ST_OK;
	return r;
}

int directory_alias_delete(struct shard *dir, const char *alias, enum storage_status *status_r,
			   const char **error_r)
{
	char name[300];
	if (canon_alias(alias, name, sizeof(name), error_r) < 0)
		return dfail(error_r, status_r, ST_INVALID, "invalid alias address");
	char **t = NULL;
	int r = directory_alias_get(dir, name, &t, error_r);
	directory_free_list(&t);
	if (r != 1)
		return r < 0 ? dfail(error_r, status_r, ST_IO, *error_r)
			     : dfail(error_r, status_r, ST_NOT_FOUND, "no such alias");
	struct buf k;
	buf_init(&k, 0);
	make_key(&k, KEY_ALIAS, name);
	struct kv_op op = { .key = buf_view(&k), .del = true };
	r = shard_kv_write(dir, &op, 1, error_r);
	buf_cleanup(&k);
	if (status_r)
		*status_r = r < 0 ? ST_IO : ST_OK;
	return r;
}

void directory_free_list(char ***listp)
{
	char **l = *listp;
	if (!l)
		return;
	*listp = NULL;
	for (char **p = l; *p; p++)
		free(*p);
	free(l);
}

int directory_alias_get(struct shard *dir, const char *alias, char ***targets_r,
			const char **error_r)
{
	*targets_r = NULL;
	struct buf k, v;
	buf_init(&k, 0);
	buf_init(&v, 0);
	make_key(&k, KEY_ALIAS, alias);
	int r = shard_kv_get(dir, buf_view(&k), &v, error_r);
	buf_cleanup(&k);
	if (r == 1) {
		struct dec d = dec_make(v.data, v.len);
		uint16_t n = 0;
		if (get_u8(&d) == RECORD_VERSION)
			n = get_u16(&d);
		char **l = xcalloc((size_t)n + 1, sizeof(char *));
		for (uint16_t i = 0; i < n && !d.bad; i++) {
			struct view t = get_view16(&d);
			if (!d.bad)
				l[i] = strndup((const char *)t.ptr, t.len);
		}
		if (d.bad) {
			char **tmp = l;
			directory_free_list(&tmp);
			r = dfail(error_r, NULL, ST_IO, "corrupt alias record");
		} else {
			*targets_r = l;
		}
	}
	buf_cleanup(&v);
	return r;
}

struct resolved {
	char **list;
	size_t n, cap;
};

static void add_unique(struct resolved *r, const char *a)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->list[i], a) == 0)
			return;
	if (r->n + 1 >= r->cap) {
		r->cap = r->cap ? r->cap * 2 : 8;
		r->list = xrealloc(r->list, r->cap * sizeof(char *));
	}
	r->list[r->n++] = xstrdup(a);
	r->list[r->n] = NULL;
}

/* Expand one address into r. */
static int expand(struct shard *dir, const char *addr, unsigned depth, struct resolved *r,
		  const char **error_r)
{
	if (r->n >= DIRECTORY_MAX_TARGETS)
		return 0;
	char **t = NULL;
	int g = depth < DIRECTORY_MAX_DEPTH ? directory_alias_get(dir, addr, &t, error_r) : 0;
	if (g < 0)
		return -1;
	if (g == 0) {
		/* user+tag@domain: an alias of user@domain counts too. */
		struct view base, tag;
		if (depth < DIRECTORY_MAX_DEPTH &&
		    address_subaddress(view_cstr(addr), '+', &base, &tag)) {
			char plain[300];
			snprintf(plain, sizeof(plain), "%.*s@%s", (int)base.len,
				 (const char *)base.ptr, domain_of(addr));
			g = directory_alias_get(dir, plain, &t, error_r);
			if (g < 0)
				return -1;
		}
	}
	if (g == 0) {
		add_unique(r, addr);
		return 0;
	}
	int ret = 0;
	for (char **p = t; *p && ret == 0; p++)
		ret = expand(dir, *p, depth + 1, r, error_r);
	directory_free_list(&t);
	return ret;
}

int directory_resolve(struct shard *dir, const char *address, char ***out_r,
		      const char **error_r)
{
	*out_r = NULL;
	const char *dom = domain_of(address);
	if (!dom)
		return dfail(error_r, NULL, ST_INVALID, "not an address");
	int local = directory_domain_is_local(dir, dom, error_r);
	if (local <= 0)
		return local;
	struct resolved r = { 0 };
	if (expand(dir, address, 0, &r, error_r) < 0) {
		directory_free_list(&r.list);
		return -1;
	}
	*out_r = r.list;
	return (int)r.n;
}

int directory_resolve_catchall(struct shard *dir, const char *address, char ***out_r,
			       const char **error_r)
{
	*out_r = NULL;
	const char *dom = domain_of(address);
	if (!dom)
		return 0;
	char key[300];
	snprintf(key, sizeof(key), "@%s", dom);
	return directory_alias_get(dir, key, out_r, error_r);
}

/* ---- alias listing ---------------------------------------------------------- */

struct alias_collect {
	const char *domain; /* NULL: all */
	struct directory_alias *list;
	size_t n, cap;
	bool bad;
};

static int collect_alias(void *arg, struct view k, struct view v)
{
	struct alias_collect *c = arg;
	char name[300];
	if (k.len - 1 >= sizeof(name))
		return 0;
	snprintf(name, sizeof(name), "%.*s", (int)(k.len - 1), (const char *)k.ptr + 1);
	if (c->domain) {
		const char *at = strrchr(name, '@');
		if (!at || strcmp(at + 1, c->domain) != 0)
			return 0;
	}
	struct dec d = dec_make(v.ptr, v.len);
	if (get_u8(&d) != RECORD_VERSION)
		return 0;
	uint16_t n = get_u16(&d);
	char **l = xcalloc((size_t)n + 1, sizeof(char *));
	for (uint16_t i = 0; i < n && !d.bad; i++) {
		struct view t = get_view16(&d);
		if (!d.bad)
			l[i] = strndup((const char *)t.ptr, t.len);
	}
	if (d.bad) {
		directory_free_list(&l);
		c->bad = true;
		return 1;
	}
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 16;
		c->list = xrealloc(c->list, c->cap * sizeof(*c->list));
	}
	snprintf(c->list[c->n].alias, sizeof(c->list[c->n].alias), "%s", name);
	c->list[c->n++].targets = l;
	return c->n >= DIRECTORY_MAX_LIST;
}

int directory_alias_list(struct shard *dir, const char *domain, struct directory_alias **out,
			 size_t *n_r, const char **error_r)
{
	struct alias_collect c = { .domain = domain && domain[0] ? domain : NULL };
	uint8_t p = KEY_ALIAS;
	*out = NULL;
	*n_r = 0;
	int r = shard_kv_scan(dir, view_make(&p, 1), collect_alias, &c, error_r);
	if (r == 0 && c.bad)
		r = dfail(error_r, NULL, ST_IO, "corrupt alias record");
	if (r < 0) {
		directory_alias_list_free(&c.list, c.n);
		return -1;
	}
	*out = c.list;
	*n_r = c.n;
	return 0;
}

void directory_alias_list_free(struct directory_alias **list, size_t n)
{
	if (!*list)
		return;
	for (size_t i = 0; i < n; i++)
		directory_free_list(&(*list)[i].targets);
	free(*list);
	*list = NULL;
}

/* ---- DKIM keys --------------------------------------------------------------- */

static bool selector_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	return true;
}

static void dkim_key(struct buf *k, const char *domain, const char *selector)
{
	k->len = 0;
	put_u8(k, KEY_DKIM);
	buf_append(k, domain, strlen(domain));
	put_u8(k, 0);
	buf_append(k, selector, strlen(selector));
}

int directory_dkim_set(struct shard *dir, const struct dkim_key *key,
		       enum storage_status *status_r, const char **error_r)
{
	if (!selector_ok(key->selector))
		return dfail(error_r, status_r, ST_INVALID,
			     "selector: 1-63 of a-z 0-9 -, not starting or ending with -");
	if (strcmp(key->algorithm, "rsa2048") != 0 && strcmp(key->algorithm, "ed25519") != 0)
		return dfail(error_r, status_r, ST_INVALID, "algorithm: rsa2048 or ed25519");
	if (!key->public_b64 || !key->public_b64[0] || strlen(key->public_b64) > 4096 ||
	    !key->private_pem || !key->private_pem[0] || strlen(key->private_pem) > 16384)
		return dfail(error_r, status_r, ST_INVALID, "missing or oversized key");
	int r = directory_domain_is_local(dir, key->domain, error_r);
	if (r != 1)
		return r < 0 ? dfail(error_r, status_r, ST_IO, *error_r)
			     : dfail(error_r, status_r, ST_NOT_FOUND, "domain not local");
	struct buf k, v;
	buf_init(&k, 0);
	buf_init(&v, 0);
	dkim_key(&k, key->domain, key->selector);
	put_u8(&v, RECORD_VERSION);
	put_bytes16(&v, key->algorithm, strlen(key->algorithm));
	put_u64(&v, key->created_ms);
	put_bytes16(&v, key->public_b64, strlen(key->public_b64));
	put_bytes16(&v, key->private_pem, strlen(key->private_pem));
	struct kv_op op = { .key = buf_view(&k), .value = buf_view(&v) };
	r = shard_kv_write(dir, &op, 1, error_r);
	explicit_bzero(v.data, v.len);
	buf_cleanup(&k);
	buf_cleanup(&v);
	if (status_r)
		*status_r = r < 0 ? ST_IO : ST_OK;
	return r;
}

struct dkim_collect {
	const char *selector;
	bool include_private;
	struct dkim_key *list;
	size_t n, cap;
	bool bad;
};

static char *dup_view(struct view v)
{
	return strndup((const char *)v.ptr, v.len);
}

static int collect_dkim(void *arg, struct view k, struct view v)
{
	struct dkim_collect *c = arg;
	const uint8_t *nul = memchr(k.ptr, 0, k.len);
	if (!nul)
		return 0;
	size_t dl = (size_t)(nul - k.ptr) - 1, sl = k.len - dl - 2;
	if (dl >= 256 || sl >= 64)
		return 0;
	if (c->selector && (strlen(c->selector) != sl || memcmp(c->selector, nul + 1, sl) != 0))
		return 0;
	struct dec d = dec_make(v.ptr, v.len);
	if (get_u8(&d) != RECORD_VERSION)
		return 0;
	struct view alg = get_view16(&d);
	uint64_t created = get_u64(&d);
	struct view pub = get_view16(&d);
	struct view priv = get_view16(&d);
	if (d.bad || alg.len >= 16) {
		c->bad = true;
		return 1;
	}
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 4;
		c->list = xrealloc(c->list, c->cap * sizeof(*c->list));
	}
	struct dkim_key *dk = &c->list[c->n++];
	memset(dk, 0, sizeof(*dk));
	snprintf(dk->domain, sizeof(dk->domain), "%.*s", (int)dl, (const char *)k.ptr + 1);
	snprintf(dk->selector, sizeof(dk->selector), "%.*s", (int)sl, (const char *)nul + 1);
	snprintf(dk->algorithm, sizeof(dk->algorithm), "%.*s", (int)alg.len,
		 (const char *)alg.ptr);
	dk->created_ms = created;
	dk->public_b64 = dup_view(pub);
	dk->private_pem = c->include_private ? dup_view(priv) : NULL;
	return 0;
}

int directory_dkim_get(struct shard *dir, const char *domain, const char *selector,
		       bool include_private, struct dkim_key **out, size_t *n_r,
		       const char **error_r)
{
	struct dkim_collect c = { .selector = selector && selector[0] ? selector : NULL,
				  .include_private = include_private };
	struct buf p;
	buf_init(&p, 0);
	dkim_key(&p, domain, "");
	*out = NULL;
	*n_r = 0;
	int r = shard_kv_scan(dir, buf_view(&p), collect_dkim, &c, error_r);
	buf_cleanup(&p);
	if (r == 0 && c.bad)
		r = dfail(error_r, NULL, ST_IO, "corrupt DKIM record");
	if (r < 0) {
		directory_dkim_free(&c.list, c.n);
		return -1;
	}
	*out = c.list;
	*n_r = c.n;
	return 0;
}

int directory_dkim_delete(struct shard *dir, const char *domain, const char *selector,
			  enum storage_status *status_r, const char **error_r)
{
	struct dkim_key *l = NULL;
	size_t n = 0;
	if (!selector_ok(selector))
		return dfail(error_r, status_r, ST_INVALID, "bad selector");
	if (directory_dkim_get(dir, domain, selector, false, &l, &n, error_r) < 0)
		return dfail(error_r, status_r, ST_IO, *error_r);
	directory_dkim_free(&l, n);
	if (n == 0)
		return dfail(error_r, status_r, ST_NOT_FOUND, "no such DKIM key");
	struct buf k;
	buf_init(&k, 0);
	dkim_key(&k, domain, selector);
	struct kv_op op = { .key = buf_view(&k), .del = true };
	int r = shard_kv_write(dir, &op, 1, error_r);
	buf_cleanup(&k);
	if (status_r)
		*status_r = r < 0 ? ST_IO : ST_OK;
	return r;
}

void directory_dkim_free(struct dkim_key **list, size_t n)
{
	if (!*list)
		return;
	for (size_t i = 0; i < n; i++) {
		free((*list)[i].public_b64);
		if ((*list)[i].private_pem) {
			explicit_bzero((*list)[i].private_pem, strlen((*list)[i].private_pem));
			free((*list)[i].private_pem);
		}
	}
	free(*list);
	*list = NULL;
}
