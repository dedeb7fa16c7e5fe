/* The directory: domains and aliases, the small data every node answers
 * from (DESIGN "Data placement"). It lives in a shard of its own on every
 * node (DIRECTORY_SHARD); admin writes go to every node, reads are local.
 *
 * Resolution of a recipient (directory_resolve):
 *   1. an alias for the exact address -> its targets;
 *   2. else, for user+tag@domain, an alias for user@domain -> its targets;
 *   3. else the address itself if its domain is local (the caller then
 *      looks the user up on the user's shard);
 *   4. a catch-all alias "@domain" applies when the caller reports that
 *      the user does not exist (directory_resolve_catchall).
 * Aliases are not expanded recursively beyond DIRECTORY_MAX_DEPTH levels,
 * and a loop is cut there. Addresses are canonical (common/address.h). */
#ifndef STORAGE_DIRECTORY_H
#define STORAGE_DIRECTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"

#define DIRECTORY_SHARD 65535u
#define DIRECTORY_MAX_TARGETS 1000
#define DIRECTORY_MAX_DEPTH 4

struct domain_info {
	char name[256];
	bool enabled;
	uint64_t created_ms;
};

int directory_domain_add(struct shard *dir, const char *domain, enum storage_status *status_r,
			 const char **error_r);
int directory_domain_delete(struct shard *dir, const char *domain,
			    enum storage_status *status_r, const char **error_r);
/* 1 local, 0 not, -1 error. */
int directory_domain_is_local(struct shard *dir, const char *domain, const char **error_r);
/* All domains in name order; *out malloc'ed. */
int directory_domain_list(struct shard *dir, struct domain_info **out, size_t *n_r,
			  const char **error_r);

/* Set (replace) the targets of an alias: "list@d" or the catch-all "@d".
 * Targets are canonical addresses (a target may itself be an alias). The
 * alias's domain must be local. */
int directory_alias_set(struct shard *dir, const char *alias, const char *const *targets,
			size_t n_targets, enum storage_status *status_r, const char **error_r);
int directory_alias_delete(struct shard *dir, const char *alias, enum storage_status *status_r,
			   const char **error_r);
/* Targets of one alias (no expansion); *targets_r is a malloc'ed,
 * NULL-terminated array of malloc'ed strings (directory_free_list).
 * 1 found, 0 none, -1 error. */
int directory_alias_get(struct shard *dir, const char *alias, char ***targets_r,
			const char **error_r);

/* Final recipients of `address` (aliases expanded, +tag aliases tried,
 * duplicates removed, in first-seen order). Returns the count (0: the
 * domain is not local), -1 on error. */
int directory_resolve(struct shard *dir, const char *address, char ***out_r,
		      const char **error_r);
/* Targets of the catch-all of address's domain (1 found, 0 none, -1). */
int directory_resolve_catchall(struct shard *dir, const char *address, char ***out_r,
			       const char **error_r);
void directory_free_list(char ***list);

#define DIRECTORY_MAX_LIST 10000

struct directory_alias {
	char alias[300];
	char **targets; /* NULL-terminated */
};
/* Aliases in name order, of one domain (NULL or "": all), at most
 * DIRECTORY_MAX_LIST; free with directory_alias_list_free. */
int directory_alias_list(struct shard *dir, const char *domain, struct directory_alias **out,
			 size_t *n_r, const char **error_r);
void directory_alias_list_free(struct directory_alias **list, size_t n);

/* DKIM signing keys of local domains, one per (domain, selector). The
 * private key is kept here so every node (and a signer asking one) has
 * it; it is returned only when asked for. */
struct dkim_key {
	char domain[256];
	char selector[64];
	char algorithm[16]; /* "rsa2048" or "ed25519" */
	uint64_t created_ms;
	char *public_b64;   /* DNS p= value */
	char *private_pem;  /* PKCS#8 PEM, or NULL when not asked for */
};
/* Store (replace) a key; the domain must be local. */
int directory_dkim_set(struct shard *dir, const struct dkim_key *key,
		       enum storage_status *status_r, const char **error_r);
/* Keys of domain (one selector, or all when NULL/""), in selector order. */
int directory_dkim_get(struct shard *dir, const char *domain, const char *selector,
		       bool include_private, struct dkim_key **out, size_t *n_r,
		       const char **error_r);
int directory_dkim_delete(struct shard *dir, const char *domain, const char *selector,
			  enum storage_status *status_r, const char **error_r);
void directory_dkim_free(struct dkim_key **list, size_t n);

#endif
