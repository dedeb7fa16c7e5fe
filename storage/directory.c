/* Domains and aliases in the directory shard. See directory.h.
 *
 * Keys: 'D' domain -> {version, enabled, created_ms}
 *       'A' alias  -> {version, count u16, targets (u16 length + bytes)...}
 * Concurrent edits of one alias are last-writer-wins (admin traffic). */
#include "storage/directory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/address.h"
#include "storage/codec.h"

#define KEY_DOMAIN 'D'
#define KEY_ALIAS 'A'

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
