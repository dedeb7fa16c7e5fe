/* mailctl dkim keygen|show|remove and dns: DKIM keys kept in the directory
 * (every node has a copy: storage/directory.h) and the DNS records a
 * domain needs, like mailcow's DNS page. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "common/dkim_key.h"
#include "common/loop.h"
#include "common/redis.h"
#include "node/ctl_internal.h"
#include "proto/rpc.h"

/* Live node addresses (or --node). Returns the count, -1 (printed). */
static int node_addrs(struct ctl *c, char (**addrs)[128])
{
	*addrs = NULL;
	if (c->node) {
		*addrs = xcalloc(1, sizeof(**addrs));
		snprintf((*addrs)[0], sizeof((*addrs)[0]), "%s", c->node);
		return 1;
	}
	struct redis_client *rc = ctl_redis_open(c);
	if (!rc)
		return -1;
	struct ctl_member *m = NULL;
	int n = ctl_members(c, rc, &m);
	redis_client_free(&rc);
	if (n < 0)
		return -1;
	*addrs = xcalloc((size_t)n + 1, sizeof(**addrs));
	int k = 0;
	for (int i = 0; i < n; i++)
		if (m[i].alive)
			snprintf((*addrs)[k++], sizeof((*addrs)[0]), "%s", m[i].addr);
	free(m);
	if (k == 0)
		fprintf(stderr, "mailctl: no live node found\n");
	return k ? k : -1;
}

/* 1 local, 0 not (printed), -1 error (printed). */
static int domain_local(struct ctl *c, const char *addr, const char *domain)
{
	Mail__Rpc__DomainRequest req = MAIL__RPC__DOMAIN_REQUEST__INIT;
	req.name = "";
	ProtobufCMessage *rep;
	if (ctl_call(c, addr, RPC_METHOD_DOMAIN_LIST, &req.base, c->timeout_ms, &rep, NULL, NULL, 0))
		return -1;
	const Mail__Rpc__DomainList *l = (const Mail__Rpc__DomainList *)rep;
	int found = 0;
	for (size_t i = 0; i < l->n_names; i++)
		if (strcasecmp(l->names[i], domain) == 0)
			found = 1;
	ctl_free_reply(&rep);
	if (!found)
		fprintf(stderr, "mailctl: %s is not a local domain (mailctl domain add %s)\n", domain,
			domain);
	return found;
}

/* The keys of a domain (one selector or all). 0 with *keys_r, 1 failed. */
static int get_keys(struct ctl *c, const char *addr, const char *domain, const char *selector,
		    bool priv, Mail__Rpc__DkimKeys **keys_r)
{
	Mail__Rpc__DkimRequest req = MAIL__RPC__DKIM_REQUEST__INIT;
	req.domain = (char *)domain;
	req.selector = (char *)(selector ? selector : "");
	req.include_private = priv;
	ProtobufCMessage *rep;
	if (ctl_call(c, addr, RPC_METHOD_DKIM_GET, &req.base, c->timeout_ms, &rep, NULL, NULL, 0))
		return 1;
	*keys_r = (Mail__Rpc__DkimKeys *)rep;
	return 0;
}

static void lower(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

static void dkim_txt(char *out, size_t len, const char *algo, const char *p)
{
	snprintf(out, len, "v=DKIM1; k=%s; p=%s",
		 strcmp(algo, "ed25519") == 0 ? "ed25519" : "rsa", p);
}

static int usage_dkim(void)
{
	fprintf(stderr, "usage: mailctl dkim keygen DOMAIN [--selector S] [--algo rsa2048|ed25519]\n"
			"       mailctl dkim show DOMAIN [--selector S] [--private]\n"
			"       mailctl dkim remove DOMAIN SELECTOR\n");
	return CTL_USAGE;
}

int ctl_cmd_dkim(struct ctl *c, int argc, char **argv)
{
	if (argc < 2)
		return usage_dkim();
	const char *sub = argv[0];
	char domain[256];
	snprintf(domain, sizeof(domain), "%s", argv[1]);
	lower(domain);
	const char *selector = NULL, *algo = "rsa2048";
	bool priv = false;
	int i = 2;
	if (strcmp(sub, "remove") == 0) {
		if (argc != 3)
			return usage_dkim();
		selector = argv[2];
		i = 3;
	}
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--selector") == 0 && i + 1 < argc)
			selector = argv[++i];
		else if (strcmp(argv[i], "--algo") == 0 && i + 1 < argc)
			algo = argv[++i];
		else if (strcmp(argv[i], "--private") == 0)
			priv = true;
		else
			return usage_dkim();
	}
	int a = dkim_algo_parse(algo);
	if (a < 0) {
		fprintf(stderr, "mailctl: --algo wants rsa2048 or ed25519\n");
		return CTL_USAGE;
	}
	char (*addrs)[128];
	int n = node_addrs(c, &addrs);
	if (n < 0)
		return CTL_FAIL;
	int status = CTL_FAIL;
	int local = domain_local(c, addrs[0], domain);
	if (local <= 0)
		goto out;
	if (strcmp(sub, "keygen") == 0) {
		if (!selector)
			selector = "dkim";
		Mail__Rpc__DkimKeys *have = NULL;
		if (get_keys(c, addrs[0], domain, selector, false, &have))
			goto out;
		size_t exists = have->n_keys;
		protobuf_c_message_free_unpacked(&have->base, NULL);
		if (exists) {
			fprintf(stderr,
				"mailctl: %s already has a key with selector %s: pick another --selector "
				"to rotate (publish it, then remove the old one), or `dkim remove %s %s`\n",
				domain, selector, domain, selector);
			goto out;
		}
		struct buf pem, pub;
		buf_init(&pem, 0);
		buf_init(&pub, 0);
		const char *err = NULL;
		if (dkim_keygen((enum dkim_algo)a, &pem, &pub, &err) < 0) {
			fprintf(stderr, "mailctl: %s\n", err);
			buf_cleanup(&pem);
			buf_cleanup(&pub);
			goto out;
		}
		Mail__Rpc__DkimKey req = MAIL__RPC__DKIM_KEY__INIT;
		req.domain = domain;
		req.selector = (char *)selector;
		req.algorithm = (char *)dkim_algo_str((enum dkim_algo)a);
		req.private_pem = (char *)pem.data;
		req.public_b64 = (char *)pub.data;
		req.created_ms = time_real_ms();
		status = CTL_OK;
		/* Every node keeps the directory: write the key to each. */
		for (int k = 0; k < n; k++) {
			ProtobufCMessage *rep;
			if (ctl_call(c, addrs[k], RPC_METHOD_DKIM_SET, &req.base, c->timeout_ms, &rep,
				     NULL, NULL, 0))
				status = CTL_FAIL;
			ctl_free_reply(&rep);
		}
		char txt[1200];
		dkim_txt(txt, sizeof(txt), req.algorithm, (char *)pub.data);
		if (status == CTL_OK) {
			if (c->json) {
				printf("{\"domain\":\"%s\",\"selector\":\"", domain);
				ctl_json_str(stdout, selector);
				printf("\",\"algorithm\":\"%s\",\"name\":\"%s._domainkey.%s\",\"txt\":\"%s\"}\n",
				       req.algorithm, selector, domain, txt);
			} else {
				printf("DKIM key %s (%s) for %s stored on %d node(s); publish:\n"
				       "%s._domainkey.%s. IN TXT \"%s\"\n",
				       selector, req.algorithm, domain, n, selector, domain, txt);
			}
		}
		explicit_bzero(pem.data, pem.len);
		buf_cleanup(&pem);
		buf_cleanup(&pub);
		goto out;
	}
	if (strcmp(sub, "show") == 0) {
		Mail__Rpc__DkimKeys *keys = NULL;
		if (get_keys(c, addrs[0], domain, selector, priv, &keys))
			goto out;
		if (keys->n_keys == 0)
			fprintf(stderr, "mailctl: %s has no DKIM key%s%s (mailctl dkim keygen %s)\n",
				domain, selector ? " with selector " : "", selector ? selector : "",
				domain);
		for (size_t k = 0; k < keys->n_keys; k++) {
			const Mail__Rpc__DkimKey *dk = keys->keys[k];
			char txt[1200];
			dkim_txt(txt, sizeof(txt), dk->algorithm, dk->public_b64);
			if (c->json) {
				printf("{\"domain\":\"%s\",\"selector\":\"%s\",\"algorithm\":\"%s\","
				       "\"created_ms\":%llu,\"txt\":\"%s\"",
				       dk->domain, dk->selector, dk->algorithm,
				       (unsigned long long)dk->created_ms, txt);
				if (priv) {
					printf(",\"private_pem\":\"");
					ctl_json_str(stdout, dk->private_pem);
					printf("\"");
				}
				printf("}\n");
			} else {
				printf("%s._domainkey.%s. IN TXT \"%s\"\n", dk->selector, dk->domain, txt);
				if (priv)
					fputs(dk->private_pem, stdout);
			}
		}
		status = keys->n_keys ? CTL_OK : CTL_FAIL;
		protobuf_c_message_free_unpacked(&keys->base, NULL);
		goto out;
	}
	if (strcmp(sub, "remove") == 0) {
		Mail__Rpc__DkimRequest req = MAIL__RPC__DKIM_REQUEST__INIT;
		req.domain = domain;
		req.selector = (char *)selector;
		status = CTL_OK;
		for (int k = 0; k < n; k++) {
			ProtobufCMessage *rep;
			if (ctl_call(c, addrs[k], RPC_METHOD_DKIM_DELETE, &req.base, c->timeout_ms, &rep,
				     NULL, NULL, 0))
				status = CTL_FAIL;
			ctl_free_reply(&rep);
		}
		if (status == CTL_OK)
			printf("removed DKIM key %s of %s (remove %s._domainkey.%s from DNS too)\n",
			       selector, domain, selector, domain);
		goto out;
	}
	status = usage_dkim();
out:
	free(addrs);
	return status;
}

/* ---- dns ------------------------------------------------------------------------ */

struct rr {
	char name[300];
	const char *type;
	char value[1400];
};

struct records {
	struct rr *r;
	size_t n, cap;
};

static void add(struct records *rs, const char *name, const char *type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void add(struct records *rs, const char *name, const char *type, const char *fmt, ...)
{
	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? 2 * rs->cap : 32;
		rs->r = xrealloc(rs->r, rs->cap * sizeof(*rs->r));
	}
	struct rr *r = &rs->r[rs->n++];
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->type = type;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->value, sizeof(r->value), fmt, ap);
	va_end(ap);
}

/* TXT data as zone-file strings of at most 255 bytes each. */
static void zone_txt(const char *v)
{
	size_t n = strlen(v);
	if (n > 255)
		printf("( ");
	for (size_t o = 0; o < n || o == 0; o += 255) {
		printf("%s\"%.*s\"", o ? " " : "", (int)MIN((size_t)255, n - o), v + o);
		if (n == 0)
			break;
	}
	if (n > 255)
		printf(" )");
}

static int usage_dns(void)
{
	fprintf(stderr, "usage: mailctl dns DOMAIN [--zone] [--host MX-HOST] [--ipv4 ADDR] "
			"[--ipv6 ADDR] [--ttl SECONDS]\n");
	return CTL_USAGE;
}

int ctl_cmd_dns(struct ctl *c, int argc, char **argv)
{
	if (argc < 1 || argv[0][0] == '-')
		return usage_dns();
	char domain[256], host[300] = "";
	snprintf(domain, sizeof(domain), "%s", argv[0]);
	lower(domain);
	const char *ipv4 = NULL, *ipv6 = NULL;
	bool zone = false;
	unsigned long ttl = 3600;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--zone") == 0) {
			zone = true;
		} else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
			snprintf(host, sizeof(host), "%s", argv[++i]);
			lower(host);
		} else if (strcmp(argv[i], "--ipv4") == 0 && i + 1 < argc) {
			ipv4 = argv[++i];
			if (strspn(ipv4, "0123456789.") != strlen(ipv4))
				return usage_dns();
		} else if (strcmp(argv[i], "--ipv6") == 0 && i + 1 < argc) {
			ipv6 = argv[++i];
			if (strspn(ipv6, "0123456789abcdefABCDEF:") != strlen(ipv6))
				return usage_dns();
		} else if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
			char *end;
			ttl = strtoul(argv[++i], &end, 10);
			if (*end || ttl < 60 || ttl > 604800)
				return usage_dns();
		} else {
			return usage_dns();
		}
	}
	if (!host[0])
		snprintf(host, sizeof(host), "mail.%s", domain);
	char (*addrs)[128];
	int n = node_addrs(c, &addrs);
	if (n < 0)
		return CTL_FAIL;
	int status = CTL_FAIL;
	Mail__Rpc__DkimKeys *keys = NULL;
	if (domain_local(c, addrs[0], domain) <= 0 ||
	    get_keys(c, addrs[0], domain, NULL, false, &keys))
		goto out;

	struct records rs = { 0 };
	char fqdn[300], h[320], name[400];
	snprintf(fqdn, sizeof(fqdn), "%s.", domain);
	snprintf(h, sizeof(h), "%s.", host);
	add(&rs, fqdn, "MX", "10 %s", h);
	if (ipv4)
		add(&rs, h, "A", "%s", ipv4);
	if (ipv6)
		add(&rs, h, "AAAA", "%s", ipv6);
	char spf[300] = "v=spf1";
	if (ipv4)
		snprintf(spf + strlen(spf), sizeof(spf) - strlen(spf), " ip4:%s", ipv4);
	if (ipv6)
		snprintf(spf + strlen(spf), sizeof(spf) - strlen(spf), " ip6:%s", ipv6);
	snprintf(spf + strlen(spf), sizeof(spf) - strlen(spf), " mx -all");
	add(&rs, fqdn, "TXT", "%s", spf);
	for (size_t k = 0; k < keys->n_keys; k++) {
		char txt[1200];
		dkim_txt(txt, sizeof(txt), keys->keys[k]->algorithm, keys->keys[k]->public_b64);
		snprintf(name, sizeof(name), "%s._domainkey.%s", keys->keys[k]->selector, fqdn);
		add(&rs, name, "TXT", "%s", txt);
	}
	snprintf(name, sizeof(name), "_dmarc.%s", fqdn);
	add(&rs, name, "TXT", "v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:postmaster@%s",
	    domain);
	/* MTA-STS: the id changes exactly when the policy does. */
	char policy[700];
	snprintf(policy, sizeof(policy), "version: STSv1\nmode: enforce\nmx: %s\nmax_age: 604800\n",
		 host);
	uint8_t dig[SHA256_DIGEST_LENGTH];
	SHA256((const uint8_t *)policy, strlen(policy), dig);
	char id[17];
	for (int k = 0; k < 8; k++)
		snprintf(id + 2 * k, 3, "%02x", dig[k]);
	snprintf(name, sizeof(name), "_mta-sts.%s", fqdn);
	add(&rs, name, "TXT", "v=STSv1; id=%s", id);
	snprintf(name, sizeof(name), "mta-sts.%s", fqdn);
	add(&rs, name, "CNAME", "%s", h);
	snprintf(name, sizeof(name), "_smtp._tls.%s", fqdn);
	add(&rs, name, "TXT", "v=TLSRPTv1; rua=mailto:postmaster@%s", domain);
	static const struct {
		const char *svc;
		unsigned port;
	} srv[] = {
		{ "_submissions._tcp", 465 }, { "_submission._tcp", 587 }, { "_imaps._tcp", 993 },
		{ "_imap._tcp", 143 },        { "_pop3s._tcp", 995 },      { "_pop3._tcp", 110 },
		{ "_autodiscover._tcp", 443 },
	};
	for (size_t k = 0; k < ARRAY_LEN(srv); k++) {
		snprintf(name, sizeof(name), "%s.%s", srv[k].svc, fqdn);
		add(&rs, name, "SRV", "0 1 %u %s", srv[k].port, h);
	}
	snprintf(name, sizeof(name), "autoconfig.%s", fqdn);
	add(&rs, name, "CNAME", "%s", h);
	snprintf(name, sizeof(name), "autodiscover.%s", fqdn);
	add(&rs, name, "CNAME", "%s", h);

	char ptr[900];
	if (ipv4 || ipv6)
		snprintf(ptr, sizeof(ptr),
			 "PTR: ask the provider of %s%s%s to set its reverse DNS to %s (it must match "
			 "the A/AAAA record of %s)",
			 ipv4 ? ipv4 : "", ipv4 && ipv6 ? " and " : "", ipv6 ? ipv6 : "", h, host);
	else
		snprintf(ptr, sizeof(ptr),
			 "PTR: ask your hosting provider to set the reverse DNS of the server's "
			 "addresses to %s (give --ipv4/--ipv6 for the A/AAAA and SPF records)", h);
	char sts_note[900], dkim_note[400];
	snprintf(sts_note, sizeof(sts_note),
		 "MTA-STS: serve the policy below at https://mta-sts.%s/.well-known/mta-sts.txt with "
		 "a certificate valid for mta-sts.%s (mailcluster serves no HTTP)", domain, domain);
	snprintf(dkim_note, sizeof(dkim_note),
		 "DKIM: no key yet: mailctl dkim keygen %s, then run this again", domain);
	const char *notes[] = {
		ptr,
		sts_note,
		"autoconfig/autodiscover: the CNAMEs and the _autodiscover SRV point at a web server "
		"that answers the clients' XML requests (mailcluster serves no HTTP); the other SRV "
		"records (RFC 6186) work on their own",
		keys->n_keys ? NULL : dkim_note,
	};

	if (c->json) {
		printf("{\"domain\":\"%s\",\"records\":[", domain);
		for (size_t k = 0; k < rs.n; k++) {
			printf("%s{\"name\":\"", k ? "," : "");
			ctl_json_str(stdout, rs.r[k].name);
			printf("\",\"type\":\"%s\",\"value\":\"", rs.r[k].type);
			ctl_json_str(stdout, rs.r[k].value);
			printf("\"}");
		}
		printf("],\"mta_sts_policy\":\"");
		ctl_json_str(stdout, policy);
		printf("\",\"notes\":[");
		bool first = true;
		for (size_t k = 0; k < ARRAY_LEN(notes); k++) {
			if (!notes[k])
				continue;
			printf("%s\"", first ? "" : ",");
			ctl_json_str(stdout, notes[k]);
			printf("\"");
			first = false;
		}
		printf("]}\n");
	} else if (zone) {
		printf("; DNS records for %s (mailctl dns --zone)\n", domain);
		for (size_t k = 0; k < rs.n; k++) {
			printf("%s\t%lu\tIN\t%s\t", rs.r[k].name, ttl, rs.r[k].type);
			if (strcmp(rs.r[k].type, "TXT") == 0)
				zone_txt(rs.r[k].value);
			else
				printf("%s", rs.r[k].value);
			printf("\n");
		}
		for (size_t k = 0; k < ARRAY_LEN(notes); k++)
			if (notes[k])
				printf("; %s\n", notes[k]);
		printf("; MTA-STS policy file (mta-sts.txt):\n");
		for (const char *p = policy; *p;) {
			size_t l = strcspn(p, "\n");
			printf(";   %.*s\n", (int)l, p);
			p += l + (p[l] == '\n');
		}
	} else {
		for (size_t k = 0; k < rs.n; k++) {
			if (strcmp(rs.r[k].type, "TXT") == 0)
				printf("%-44s %-6s \"%s\"\n", rs.r[k].name, rs.r[k].type, rs.r[k].value);
			else
				printf("%-44s %-6s %s\n", rs.r[k].name, rs.r[k].type, rs.r[k].value);
		}
		printf("\n");
		for (size_t k = 0; k < ARRAY_LEN(notes); k++)
			if (notes[k])
				printf("%s\n", notes[k]);
		printf("\nMTA-STS policy (https://mta-sts.%s/.well-known/mta-sts.txt):\n%s", domain,
		       policy);
	}
	free(rs.r);
	status = CTL_OK;
out:
	if (keys)
		protobuf_c_message_free_unpacked(&keys->base, NULL);
	free(addrs);
	return status;
}
