#include "storage/search.h"

#include <stdlib.h>
#include <strings.h>

#include "storage/mime.h"
#include "storage/store.h"

#define DAY_MS 86400000ull
/* Message records fetched per store_fetch_range call. */
#define FETCH_WINDOW 512
/* Encoded body bytes decoded at once (the decoded and converted text of one
 * slice is all the body text held in memory). */
#define BODY_SLICE 4096

/* ===== Keys ===== */

const char *search_key_type_str(enum search_key_type t)
{
	static const char *const names[] = {
		[SEARCH_AND] = "AND",
		[SEARCH_OR] = "OR",
		[SEARCH_NOT] = "NOT",
		[SEARCH_ALL] = "ALL",
		[SEARCH_ANSWERED] = "ANSWERED",
		[SEARCH_UNANSWERED] = "UNANSWERED",
		[SEARCH_DELETED] = "DELETED",
		[SEARCH_UNDELETED] = "UNDELETED",
		[SEARCH_DRAFT] = "DRAFT",
		[SEARCH_UNDRAFT] = "UNDRAFT",
		[SEARCH_FLAGGED] = "FLAGGED",
		[SEARCH_UNFLAGGED] = "UNFLAGGED",
		[SEARCH_SEEN] = "SEEN",
		[SEARCH_UNSEEN] = "UNSEEN",
		[SEARCH_SAVEDATESUPPORTED] = "SAVEDATESUPPORTED",
		[SEARCH_KEYWORD] = "KEYWORD",
		[SEARCH_UNKEYWORD] = "UNKEYWORD",
		[SEARCH_BEFORE] = "BEFORE",
		[SEARCH_ON] = "ON",
		[SEARCH_SINCE] = "SINCE",
		[SEARCH_SENTBEFORE] = "SENTBEFORE",
		[SEARCH_SENTON] = "SENTON",
		[SEARCH_SENTSINCE] = "SENTSINCE",
		[SEARCH_SAVEDBEFORE] = "SAVEDBEFORE",
		[SEARCH_SAVEDON] = "SAVEDON",
		[SEARCH_SAVEDSINCE] = "SAVEDSINCE",
		[SEARCH_LARGER] = "LARGER",
		[SEARCH_SMALLER] = "SMALLER",
		[SEARCH_MODSEQ] = "MODSEQ",
		[SEARCH_UID] = "UID",
		[SEARCH_BCC] = "BCC",
		[SEARCH_CC] = "CC",
		[SEARCH_FROM] = "FROM",
		[SEARCH_SUBJECT] = "SUBJECT",
		[SEARCH_TO] = "TO",
		[SEARCH_HEADER] = "HEADER",
		[SEARCH_BODY] = "BODY",
		[SEARCH_TEXT] = "TEXT",
	};
	if ((unsigned)t < ARRAY_LEN(names) && names[t])
		return names[t];
	return "?";
}

static bool is_date_type(enum search_key_type t)
{
	return t >= SEARCH_BEFORE && t <= SEARCH_SAVEDSINCE;
}

static bool is_str_type(enum search_key_type t)
{
	return t == SEARCH_KEYWORD || t == SEARCH_UNKEYWORD || (t >= SEARCH_BCC && t <= SEARCH_TEXT);
}

static struct search_key *key_alloc(enum search_key_type type)
{
	struct search_key *k = xcalloc(1, sizeof(*k));
	k->type = type;
	return k;
}

static char *dup_view(struct view v)
{
	char *s = xmalloc(v.len + 1);
	if (v.len)
		memcpy(s, v.ptr, v.len);
	s[v.len] = '\0';
	return s;
}

struct search_key *search_key_new_leaf(enum search_key_type type)
{
	if (type < SEARCH_ALL || type > SEARCH_SAVEDATESUPPORTED)
		return NULL;
	return key_alloc(type);
}

struct search_key *search_key_new_str(enum search_key_type type, struct view s)
{
	if (!is_str_type(type) || type == SEARCH_HEADER)
		return NULL;
	struct search_key *k = key_alloc(type);
	k->str = dup_view(s);
	k->str_len = s.len;
	return k;
}

struct search_key *search_key_new_header(struct view field, struct view s)
{
	struct search_key *k = key_alloc(SEARCH_HEADER);
	k->field = dup_view(field);
	k->str = dup_view(s);
	k->str_len = s.len;
	return k;
}

struct search_key *search_key_new_num(enum search_key_type type, uint64_t n)
{
	if (type != SEARCH_LARGER && type != SEARCH_SMALLER && type != SEARCH_MODSEQ)
		return NULL;
	struct search_key *k = key_alloc(type);
	k->num = n;
	return k;
}

struct search_key *search_key_new_modseq(uint64_t n, struct view entry,
					 enum search_modseq_entry_type type)
{
	struct search_key *k = key_alloc(SEARCH_MODSEQ);
	k->num = n;
	if (entry.len)
		k->field = dup_view(entry);
	k->modseq_type = type;
	return k;
}

static bool is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
	static const int dm[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

static bool valid_date(int y, int m, int d)
{
	return y >= 1 && y <= 9999 && m >= 1 && m <= 12 && d >= 1 && d <= days_in_month(y, m);
}

int64_t search_days_from_civil(int y, int m, int d)
{
	/* Howard Hinnant's days_from_civil. */
	int64_t yy = (int64_t)y - (m <= 2);
	int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
	int64_t yoe = yy - era * 400;
	int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

struct search_key *search_key_new_date(enum search_key_type type, int y, int m, int d)
{
	if (!is_date_type(type) || !valid_date(y, m, d))
		return NULL;
	struct search_key *k = key_alloc(type);
	k->year = y;
	k->month = m;
	k->day = d;
	k->day_num = search_days_from_civil(y, m, d);
	return k;
}

static int range_cmp(const void *a, const void *b)
{
	const struct search_uid_range *x = a, *y = b;
	return x->first < y->first ? -1 : x->first > y->first;
}

struct search_key *search_key_new_uidset(const struct search_uid_range *r, size_t n)
{
	struct search_key *k = key_alloc(SEARCH_UID);
	if (n == 0)
		return k;
	struct search_uid_range *v = xmalloc(n * sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		v[i].first = MIN(r[i].first, r[i].last);
		v[i].last = MAX(r[i].first, r[i].last);
	}
	qsort(v, n, sizeof(*v), range_cmp);
	size_t o = 0;
	for (size_t i = 1; i < n; i++) {
		/* Merge overlapping and adjacent ranges (no overflow: last < max). */
		if (v[o].last == UINT32_MAX || v[i].first <= v[o].last + 1) {
			v[o].last = MAX(v[o].last, v[i].last);
		} else {
			v[++o] = v[i];
		}
	}
	k->uids = v;
	k->n_uids = o + 1;
	return k;
}

struct search_key *search_key_new_and(void)
{
	return key_alloc(SEARCH_AND);
}

void search_key_and_add(struct search_key *and_key, struct search_key *child)
{
	and_key->children = xrealloc(and_key->children,
				     (and_key->n_children + 1) * sizeof(*and_key->children));
	and_key->children[and_key->n_children++] = child;
}

struct search_key *search_key_new_or(struct search_key *a, struct search_key *b)
{
	struct search_key *k = key_alloc(SEARCH_OR);
	k->children = xmalloc(2 * sizeof(*k->children));
	k->children[0] = a;
	k->children[1] = b;
	k->n_children = 2;
	return k;
}

struct search_key *search_key_new_not(struct search_key *a)
{
	struct search_key *k = key_alloc(SEARCH_NOT);
	k->children = xmalloc(sizeof(*k->children));
	k->children[0] = a;
	k->n_children = 1;
	return k;
}

void search_key_free(struct search_key **kp)
{
	struct search_key *k = *kp;
	if (!k)
		return;
	*kp = NULL;
	for (size_t i = 0; i < k->n_children; i++)
		search_key_free(&k->children[i]);
	free(k->children);
	free(k->str);
	free(k->field);
	free(k->uids);
	free(k);
}

/* ===== Dates ===== */

static const char *const month_names[12] = { "jan", "feb", "mar", "apr", "may", "jun",
					     "jul", "aug", "sep", "oct", "nov", "dec" };

static uint8_t lc(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Month 1..12 from the first three letters of v, 0 if none. */
static int month_lookup(struct view v)
{
	if (v.len < 3)
		return 0;
	for (int i = 0; i < 12; i++)
		if (lc(v.ptr[0]) == month_names[i][0] && lc(v.ptr[1]) == month_names[i][1] &&
		    lc(v.ptr[2]) == month_names[i][2])
			return i + 1;
	return 0;
}

int search_parse_date(struct view s, int *y, int *m, int *d)
{
	if (s.len >= 2 && s.ptr[0] == '"' && s.ptr[s.len - 1] == '"') {
		s.ptr++;
		s.len -= 2;
	}
	size_t i = 0;
	int day = 0, year = 0, nd = 0;
	while (i < s.len && is_digit(s.ptr[i]) && nd < 2) {
		day = day * 10 + (s.ptr[i++] - '0');
		nd++;
	}
	if (nd == 0 || i >= s.len || s.ptr[i] != '-')
		return -1;
	i++;
	if (s.len - i != 8 || s.ptr[i + 3] != '-')
		return -1;
	struct view mv = view_make(s.ptr + i, 3);
	for (size_t j = 0; j < 3; j++)
		if (!is_alpha(mv.ptr[j]))
			return -1;
	int mon = month_lookup(mv);
	i += 4;
	for (size_t j = 0; j < 4; j++) {
		if (!is_digit(s.ptr[i + j]))
			return -1;
		year = year * 10 + (s.ptr[i + j] - '0');
	}
	if (!mon || !valid_date(year, mon, day))
		return -1;
	*y = year;
	*m = mon;
	*d = day;
	return 0;
}

struct dcur {
	const uint8_t *p, *end;
};

/* Skips white space, line breaks and (nested) comments. */
static void date_skip_cfws(struct dcur *c)
{
	int depth = 0;
	while (c->p < c->end) {
		uint8_t ch = *c->p;
		if (depth > 0) {
			c->p++;
			if (ch == '\\' && c->p < c->end)
				c->p++;
			else if (ch == '(')
				depth++;
			else if (ch == ')')
				depth--;
		} else if (ch == '(') {
			depth = 1;
			c->p++;
		} else if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
			c->p++;
		} else {
			return;
		}
	}
}

/* Up to maxd digits; -1 if none. */
static int date_number(struct dcur *c, int maxd, int *ndigits)
{
	int v = 0, n = 0;
	while (c->p < c->end && is_digit(*c->p) && n < maxd) {
		v = v * 10 + (*c->p++ - '0');
		n++;
	}
	if (ndigits)
		*ndigits = n;
	return n ? v : -1;
}

static struct view date_word(struct dcur *c)
{
	const uint8_t *s = c->p;
	while (c->p < c->end && is_alpha(*c->p))
		c->p++;
	return view_make(s, (size_t)(c->p - s));
}

static int zone_lookup(struct view z, int *minutes)
{
	static const struct {
		const char *name;
		int hours;
	} tab[] = {
		{ "ut", 0 },   { "gmt", 0 },  { "utc", 0 },  { "z", 0 },    { "est", -5 },
		{ "edt", -4 }, { "cst", -6 }, { "cdt", -5 }, { "mst", -7 }, { "mdt", -6 },
		{ "pst", -8 }, { "pdt", -7 },
	};
	for (size_t i = 0; i < ARRAY_LEN(tab); i++)
		if (view_eq_nocase(z, tab[i].name)) {
			*minutes = tab[i].hours * 60;
			return 0;
		}
	/* Military zones were defined with the wrong sign; RFC 5322 4.3 says
	 * to read them (and anything else unknown) as -0000. */
	*minutes = 0;
	return 0;
}

int search_parse_rfc5322_date(struct view s, struct search_datetime *out)
{
	struct dcur c = { s.ptr, s.ptr + s.len };
	struct search_datetime dt = { 0 };
	date_skip_cfws(&c);
	if (c.p < c.end && is_alpha(*c.p)) { /* day-of-week, comma optional */
		date_word(&c);
		date_skip_cfws(&c);
		if (c.p < c.end && *c.p == ',')
			c.p++;
		date_skip_cfws(&c);
	}
	dt.day = date_number(&c, 2, NULL);
	date_skip_cfws(&c);
	if (c.p < c.end && *c.p == '-') /* "2-Jan-2024" seen in the wild */
		c.p++;
	dt.month = month_lookup(date_word(&c));
	date_skip_cfws(&c);
	if (c.p < c.end && *c.p == '-')
		c.p++;
	int nd = 0;
	dt.year = date_number(&c, 4, &nd);
	if (dt.day < 0 || !dt.month || dt.year < 0 || nd < 2)
		return -1;
	if (c.p < c.end && is_digit(*c.p))
		return -1; /* a year of five digits or more */
	if (nd == 2)
		dt.year += dt.year < 50 ? 2000 : 1900;
	else if (nd == 3)
		dt.year += 1900;
	if (!valid_date(dt.year, dt.month, dt.day))
		return -1;
	date_skip_cfws(&c);
	/* The time; tolerated when missing. */
	if (c.p < c.end && is_digit(*c.p)) {
		dt.hour = date_number(&c, 2, NULL);
		date_skip_cfws(&c);
		if (c.p >= c.end || *c.p != ':')
			return -1;
		c.p++;
		date_skip_cfws(&c);
		dt.min = date_number(&c, 2, NULL);
		if (dt.min < 0)
			return -1;
		date_skip_cfws(&c);
		if (c.p < c.end && *c.p == ':') {
			c.p++;
			date_skip_cfws(&c);
			dt.sec = date_number(&c, 2, NULL);
			if (dt.sec < 0)
				return -1;
		}
		if (dt.hour > 23 || dt.min > 59 || dt.sec > 60)
			return -1;
		date_skip_cfws(&c);
		if (c.p < c.end && (*c.p == '+' || *c.p == '-')) {
			int sign = *c.p++ == '-' ? -1 : 1;
			int n4 = 0;
			int z = date_number(&c, 4, &n4);
			if (n4 != 4 || z % 100 > 59)
				return -1;
			dt.zone_min = sign * ((z / 100) * 60 + z % 100);
		} else if (c.p < c.end && is_alpha(*c.p)) {
			zone_lookup(date_word(&c), &dt.zone_min);
		}
	}
	*out = dt;
	return 0;
}

int64_t search_datetime_to_unix(const struct search_datetime *dt)
{
	return search_days_from_civil(dt->year, dt->month, dt->day) * 86400 +
	       dt->hour * 3600 + dt->min * 60 + dt->sec - (int64_t)dt->zone_min * 60;
}

/* ===== Text: charsets, case folding, matching ===== */

enum charset { CS_UNKNOWN, CS_ASCII, CS_UTF8, CS_LATIN1, CS_LATIN9, CS_CP1252 };

static const uint16_t cp1252_80[32] = {
	0x20ac, 0xfffd, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
	0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0xfffd, 0x017d, 0xfffd,
	0xfffd, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
	0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0xfffd, 0x017e, 0x0178,
};

static uint32_t byte_cp(enum charset cs, uint8_t b)
{
	if (b < 0x80 || cs == CS_LATIN1)
		return b;
	if (cs == CS_LATIN9) {
		switch (b) {
		case 0xa4: return 0x20ac;
		case 0xa6: return 0x0160;
		case 0xa8: return 0x0161;
		case 0xb4: return 0x017d;
		case 0xb8: return 0x017e;
		case 0xbc: return 0x0152;
		case 0xbd: return 0x0153;
		case 0xbe: return 0x0178;
		default: return b;
		}
	}
	if (cs == CS_UTF8)
		return 0xfffd;
	/* windows-1252, also the reading of stray bytes in ASCII/unknown text */
	return b < 0xa0 ? cp1252_80[b - 0x80] : b;
}

static enum charset charset_lookup(struct view name)
{
	static const struct {
		const char *name;
		enum charset cs;
	} tab[] = {
		{ "us-ascii", CS_ASCII },	{ "ascii", CS_ASCII },
		{ "utf-8", CS_UTF8 },		{ "utf8", CS_UTF8 },
		{ "iso-8859-1", CS_LATIN1 },	{ "iso8859-1", CS_LATIN1 },
		{ "iso_8859-1", CS_LATIN1 },	{ "latin1", CS_LATIN1 },
		{ "iso-8859-15", CS_LATIN9 },	{ "iso8859-15", CS_LATIN9 },
		{ "latin9", CS_LATIN9 },	{ "windows-1252", CS_CP1252 },
		{ "cp1252", CS_CP1252 },
	};
	while (name.len && (name.ptr[0] == '"' || name.ptr[0] == ' ')) {
		name.ptr++;
		name.len--;
	}
	while (name.len && (name.ptr[name.len - 1] == '"' || name.ptr[name.len - 1] == ' '))
		name.len--;
	for (size_t i = 0; i < ARRAY_LEN(tab); i++)
		if (view_eq_nocase(name, tab[i].name))
			return tab[i].cs;
	return CS_UNKNOWN;
}

/* Simple lower-case folding of the letters people search with. */
static uint32_t fold_cp(uint32_t c)
{
	if (c < 0x80)
		return c >= 'A' && c <= 'Z' ? c + 32 : c;
	if (c >= 0xc0 && c <= 0xde && c != 0xd7)
		return c + 32;
	if (c >= 0x100 && c <= 0x17f) {
		if (c == 0x130)
			return 'i';
		if (c == 0x178)
			return 0xff;
		if (c == 0x17f)
			return 's';
		if (c <= 0x137 || (c >= 0x14a && c <= 0x177))
			return c | 1;
		if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
			return (c & 1) ? c + 1 : c;
		return c;
	}
	if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2)
		return c + 32;
	if (c == 0x3c2) /* final sigma */
		return 0x3c3;
	if (c >= 0x410 && c <= 0x42f)
		return c + 32;
	if (c >= 0x400 && c <= 0x40f)
		return c + 80;
	return c;
}

static void emit_cp(struct buf *out, uint32_t cp)
{
	uint8_t t[4];
	size_t n;
	cp = fold_cp(cp);
	if (cp < 0x80) {
		t[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		t[0] = (uint8_t)(0xc0 | cp >> 6);
		t[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		t[0] = (uint8_t)(0xe0 | cp >> 12);
		t[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		t[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		t[0] = (uint8_t)(0xf0 | cp >> 18);
		t[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		t[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		t[3] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 4;
	}
	if (buf_append(out, t, n) != 0)
		abort(); /* only internally bounded buffers come here */
}

/* Streaming conversion of text in a charset to case-folded UTF-8. For
 * UTF-8, ASCII and unknown charsets an incomplete sequence at the end of a
 * piece is kept for the next one. */
struct tconv {
	enum charset cs;
	uint8_t pend[4];
	uint8_t npend, need;
};

static void tconv_init(struct tconv *t, enum charset cs)
{
	memset(t, 0, sizeof(*t));
	t->cs = cs;
}

static unsigned utf8_lead_len(uint8_t c)
{
	if (c >= 0xc2 && c <= 0xdf)
		return 2;
	if (c >= 0xe0 && c <= 0xef)
		return 3;
	if (c >= 0xf0 && c <= 0xf4)
		return 4;
	return 0;
}

static bool utf8_cont_ok(uint8_t lead, unsigned idx, uint8_t c)
{
	uint8_t lo = 0x80, hi = 0xbf;
	if (idx == 1) {
		if (lead == 0xe0)
			lo = 0xa0;
		else if (lead == 0xed)
			hi = 0x9f;
		else if (lead == 0xf0)
			lo = 0x90;
		else if (lead == 0xf4)
			hi = 0x8f;
	}
	return c >= lo && c <= hi;
}

static void tconv_flush_pending(struct tconv *t, struct buf *out)
{
	for (unsigned i = 0; i < t->npend; i++)
		emit_cp(out, byte_cp(t->cs, t->pend[i]));
	t->npend = 0;
}

static void tconv_feed(struct tconv *t, const uint8_t *p, size_t n, struct buf *out)
{
	bool single = t->cs == CS_LATIN1 || t->cs == CS_LATIN9 || t->cs == CS_CP1252;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		if (single) {
			emit_cp(out, byte_cp(t->cs, c));
			continue;
		}
		if (t->npend) {
			if (utf8_cont_ok(t->pend[0], t->npend, c)) {
				t->pend[t->npend++] = c;
				if (t->npend == t->need) {
					uint32_t cp = t->pend[0] & (0x7f >> t->need);
					for (unsigned j = 1; j < t->need; j++)
						cp = cp << 6 | (t->pend[j] & 0x3f);
					emit_cp(out, cp);
					t->npend = 0;
				}
				continue;
			}
			/* Broken sequence: its bytes (a lead and continuation
			 * bytes, none of which can start a sequence) are read
			 * one by one; c starts afresh. */
			tconv_flush_pending(t, out);
		}
		if (c < 0x80) {
			emit_cp(out, c);
		} else if ((t->need = (uint8_t)utf8_lead_len(c)) != 0) {
			t->pend[0] = c;
			t->npend = 1;
		} else {
			emit_cp(out, byte_cp(t->cs, c));
		}
	}
}

static void tconv_finish(struct tconv *t, struct buf *out)
{
	tconv_flush_pending(t, out);
}

/* A folded needle with its KMP failure function. */
struct needle {
	uint8_t *p;
	size_t len;
	size_t *fail;
};

static void needle_init(struct needle *nd, struct view s)
{
	struct buf b;
	buf_init(&b, 0);
	struct tconv t;
	tconv_init(&t, CS_UNKNOWN);
	tconv_feed(&t, s.ptr, s.len, &b);
	tconv_finish(&t, &b);
	nd->len = b.len;
	nd->p = xmalloc(b.len + 1);
	if (b.len)
		memcpy(nd->p, b.data, b.len);
	buf_cleanup(&b);
	nd->fail = xmalloc((nd->len + 1) * sizeof(*nd->fail));
	nd->fail[0] = 0;
	size_t k = 0;
	for (size_t i = 1; i < nd->len; i++) {
		while (k > 0 && nd->p[i] != nd->p[k])
			k = nd->fail[k - 1];
		if (nd->p[i] == nd->p[k])
			k++;
		nd->fail[i] = k;
	}
}

static void needle_cleanup(struct needle *nd)
{
	free(nd->p);
	free(nd->fail);
}

/* Advances the match state *qp over p; true once the needle is complete.
 * The state carries partial matches across pieces. */
static bool needle_feed(const struct needle *nd, size_t *qp, const uint8_t *p, size_t n)
{
	size_t q = *qp;
	if (nd->len == 0)
		return true;
	for (size_t i = 0; i < n; i++) {
		if (q == 0) {
			const uint8_t *f = memchr(p + i, nd->p[0], n - i);
			if (!f)
				break;
			i = (size_t)(f - p);
		}
		while (q > 0 && nd->p[q] != p[i])
			q = nd->fail[q - 1];
		if (nd->p[q] == p[i] && ++q == nd->len) {
			*qp = 0;
			return true;
		}
	}
	*qp = q;
	return false;
}

/* ===== The MIME blob (format in storage/mime.h) ===== */

#define BLOB_HDR_LEN 24
#define REC_FIXED 56
enum { BK_LEAF = 0, BK_MULTIPART = 1, BK_MESSAGE = 2 };
enum { TG_TYPE = 1, TG_PARAM = 3, TG_CTE = 6, TG_DATE = 20 };

struct brec {
	size_t off, rec_len;
	uint8_t kind, flags;
	uint64_t hdr_start, hdr_len, body_start, body_len;
	struct view tlv;
};

static uint64_t le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Offset of the root record, 0 if the blob is not one we can read. */
static size_t blob_first(struct view blob)
{
	if (blob.len < BLOB_HDR_LEN || memcmp(blob.ptr, "MIMB", 4) != 0 || blob.ptr[4] != 1)
		return 0;
	size_t hl = (size_t)le(blob.ptr + 6, 2);
	return hl >= BLOB_HDR_LEN && hl <= blob.len ? hl : 0;
}

/* The record at off; records follow each other in pre-order, so the next
 * one is at off + rec_len. */
static bool blob_rec(struct view blob, size_t off, struct brec *r)
{
	if (off == 0 || off > blob.len || blob.len - off < REC_FIXED)
		return false;
	const uint8_t *b = blob.ptr + off;
	r->off = off;
	r->rec_len = (size_t)le(b, 4);
	if (r->rec_len < REC_FIXED || r->rec_len > blob.len - off)
		return false;
	r->kind = b[12];
	r->flags = b[13];
	r->hdr_start = le(b + 16, 8);
	r->hdr_len = le(b + 24, 8);
	r->body_start = le(b + 32, 8);
	r->body_len = le(b + 40, 8);
	r->tlv = view_make(b + REC_FIXED, r->rec_len - REC_FIXED);
	return true;
}

static bool get_leb(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (*pp >= end)
			return false;
		uint8_t c = *(*pp)++;
		r |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = r;
			return true;
		}
	}
	return false;
}

static bool get_lstr(const uint8_t **pp, const uint8_t *end, struct view *s)
{
	uint64_t n;
	if (!get_leb(pp, end, &n) || n > (uint64_t)(end - *pp))
		return false;
	*s = view_make(*pp, (size_t)n);
	*pp += n;
	return true;
}

/* Calls fn for each TLV of the record until it returns true; true if one
 * did. A malformed TLV ends the walk. */
static bool tlv_find(struct view tlv, uint8_t tag, bool (*fn)(void *arg, struct view v),
		     void *arg)
{
	const uint8_t *p = tlv.ptr, *end = tlv.ptr + tlv.len;
	while (p < end) {
		uint8_t t = *p++;
		struct view v;
		if (!get_lstr(&p, end, &v))
			return false;
		if (t == tag && fn(arg, v))
			return true;
	}
	return false;
}

static bool take_first(void *arg, struct view v)
{
	*(struct view *)arg = v;
	return true;
}

static bool take_charset(void *arg, struct view v)
{
	const uint8_t *p = v.ptr, *end = v.ptr + v.len;
	struct view name, val;
	if (!get_lstr(&p, end, &name) || !get_lstr(&p, end, &val))
		return false;
	if (!view_eq_cstr(name, "charset"))
		return false;
	*(struct view *)arg = val;
	return true;
}

/* ===== The program, flattened ===== */

enum tri { T_FALSE = 0, T_TRUE = 1, T_UNK = 2 };

/* When a leaf can be decided. */
enum leaf_class {
	LC_INNER,
	LC_META,   /* message record */
	LC_BLOB,   /* MIME description (Date, decoded address/subject text) */
	LC_HEADER, /* header block */
	LC_BODY,   /* body text (TEXT: header block first, then body) */
};

struct pnode {
	const struct search_key *k;
	size_t kid0, nkids; /* into ctx.kids */
	enum leaf_class cls;
	bool has_needle;
	struct needle nd;
};

struct body_part {
	uint64_t start, end;
	enum mime_cte cte;
	enum charset cs;
};

struct ctx {
	struct shard *sh;
	struct pnode *nodes;
	size_t n_nodes, cap_nodes;
	size_t *kids;
	size_t n_kids;
	uint8_t *val;   /* enum tri per node */
	bool *want;     /* leaf still needed for the current message */
	size_t *q;      /* match state per leaf */
	bool has[5];    /* leaf classes present in the program */
	/* per message */
	const struct msg_info *msg;
	struct buf blob;
	bool blob_loaded, blob_ok;
	struct brec root;
	struct buf field, dec, folded, tfold, conv;
	bool hdr_bol, hdr_stop;
	struct body_part *parts;
	size_t n_parts, cap_parts;
	/* body scan */
	size_t part_i;
	bool part_active, body_stop;
	uint64_t pos;
	struct mime_decoder md;
	bool md_raw;
	struct tconv tc;
	const char *error;
};

static int flatten(struct ctx *c, const struct search_key *k, unsigned depth, size_t *idx_r)
{
	if (!k || depth > SEARCH_MAX_DEPTH)
		return -1;
	if (c->n_nodes == c->cap_nodes) {
		c->cap_nodes = c->cap_nodes ? c->cap_nodes * 2 : 16;
		c->nodes = xrealloc(c->nodes, c->cap_nodes * sizeof(*c->nodes));
	}
	size_t me = c->n_nodes++;
	struct pnode *n = &c->nodes[me];
	memset(n, 0, sizeof(*n));
	n->k = k;
	*idx_r = me;
	switch (k->type) {
	case SEARCH_AND:
	case SEARCH_OR:
	case SEARCH_NOT: {
		size_t want = k->type == SEARCH_AND ? k->n_children : k->type == SEARCH_OR ? 2 : 1;
		if (k->n_children != want)
			return -1;
		/* Children first go to a local list: the kids array is shared. */
		size_t *local = xmalloc((want ? want : 1) * sizeof(*local));
		for (size_t i = 0; i < want; i++) {
			if (flatten(c, k->children[i], depth + 1, &local[i]) != 0) {
				free(local);
				return -1;
			}
		}
		n = &c->nodes[me];
		n->cls = LC_INNER;
		n->kid0 = c->n_kids;
		n->nkids = want;
		c->kids = xrealloc(c->kids, (c->n_kids + want + 1) * sizeof(*c->kids));
		memcpy(c->kids + c->n_kids, local, want * sizeof(*local));
		c->n_kids += want;
		free(local);
		return 0;
	}
	case SEARCH_BCC:
	case SEARCH_CC:
	case SEARCH_FROM:
	case SEARCH_SUBJECT:
	case SEARCH_TO:
		/* "" means "has the field": only the header block can tell. */
		n->cls = k->str_len ? LC_BLOB : LC_HEADER;
		break;
	case SEARCH_SENTBEFORE:
	case SEARCH_SENTON:
	case SEARCH_SENTSINCE:
		n->cls = LC_BLOB;
		break;
	case SEARCH_HEADER:
		if (!k->field)
			return -1;
		n->cls = LC_HEADER;
		break;
	case SEARCH_BODY:
	case SEARCH_TEXT:
		n->cls = k->str_len ? LC_BODY : LC_META;
		break;
	default:
		n->cls = LC_META;
		break;
	}
	if (is_str_type(k->type) && k->type != SEARCH_KEYWORD && k->type != SEARCH_UNKEYWORD) {
		if (!k->str)
			return -1;
		needle_init(&n->nd, view_make(k->str, k->str_len));
		n->has_needle = true;
	}
	c->has[n->cls] = true;
	return 0;
}

static uint8_t eval(struct ctx *c, size_t i)
{
	struct pnode *n = &c->nodes[i];
	uint8_t r;
	switch (n->k->type) {
	case SEARCH_AND:
		r = T_TRUE;
		for (size_t j = 0; j < n->nkids && r != T_FALSE; j++) {
			uint8_t v = eval(c, c->kids[n->kid0 + j]);
			if (v != T_TRUE)
				r = v;
		}
		break;
	case SEARCH_OR:
		r = T_FALSE;
		for (size_t j = 0; j < n->nkids && r != T_TRUE; j++) {
			uint8_t v = eval(c, c->kids[n->kid0 + j]);
			if (v != T_FALSE)
				r = v;
		}
		break;
	case SEARCH_NOT:
		r = eval(c, c->kids[n->kid0]);
		if (r != T_UNK)
			r = r == T_TRUE ? T_FALSE : T_TRUE;
		break;
	default:
		return c->val[i];
	}
	c->val[i] = r;
	return r;
}

/* Whether leaf n is read in the phase for class ph. TEXT is a body-class
 * leaf that looks at the header block first. */
static bool in_phase(const struct pnode *n, enum leaf_class ph)
{
	return n->cls == ph || (ph == LC_HEADER && n->k->type == SEARCH_TEXT && n->cls == LC_BODY);
}

/* Marks the undecided leaves the result still depends on (the values of
 * the last eval) that phase ph reads. Returns how many there are. */
static size_t mark_wanted(struct ctx *c, size_t i, enum leaf_class ph)
{
	struct pnode *n = &c->nodes[i];
	if (c->val[i] != T_UNK)
		return 0;
	if (n->cls != LC_INNER) {
		c->want[i] = in_phase(n, ph);
		return c->want[i];
	}
	size_t cnt = 0;
	for (size_t j = 0; j < n->nkids; j++)
		cnt += mark_wanted(c, c->kids[n->kid0 + j], ph);
	return cnt;
}

static bool has_keyword(const struct msg_info *m, const char *kw)
{
	for (size_t i = 0; m->keywords && m->keywords[i]; i++)
		if (strcasecmp(m->keywords[i], kw) == 0)
			return true;
	return false;
}

static bool in_uidset(const struct search_key *k, uint32_t uid)
{
	size_t lo = 0, hi = k->n_uids;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (uid < k->uids[mid].first)
			hi = mid;
		else if (uid > k->uids[mid].last)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

static bool date_cmp(enum search_key_type t, int64_t day, int64_t key_day)
{
	switch (t) {
	case SEARCH_BEFORE:
	case SEARCH_SENTBEFORE:
	case SEARCH_SAVEDBEFORE:
		return day < key_day;
	case SEARCH_ON:
	case SEARCH_SENTON:
	case SEARCH_SAVEDON:
		return day == key_day;
	default:
		return day >= key_day;
	}
}

static bool eval_meta(const struct search_key *k, const struct msg_info *m)
{
	switch (k->type) {
	case SEARCH_ALL:
	case SEARCH_SAVEDATESUPPORTED:
	case SEARCH_BODY: /* with an empty string */
	case SEARCH_TEXT:
		return true;
	case SEARCH_ANSWERED: return m->flags & FLAG_ANSWERED;
	case SEARCH_UNANSWERED: return !(m->flags & FLAG_ANSWERED);
	case SEARCH_DELETED: return m->flags & FLAG_DELETED;
	case SEARCH_UNDELETED: return !(m->flags & FLAG_DELETED);
	case SEARCH_DRAFT: return m->flags & FLAG_DRAFT;
	case SEARCH_UNDRAFT: return !(m->flags & FLAG_DRAFT);
	case SEARCH_FLAGGED: return m->flags & FLAG_FLAGGED;
	case SEARCH_UNFLAGGED: return !(m->flags & FLAG_FLAGGED);
	case SEARCH_SEEN: return m->flags & FLAG_SEEN;
	case SEARCH_UNSEEN: return !(m->flags & FLAG_SEEN);
	case SEARCH_KEYWORD: return has_keyword(m, k->str);
	case SEARCH_UNKEYWORD: return !has_keyword(m, k->str);
	case SEARCH_BEFORE:
	case SEARCH_ON:
	case SEARCH_SINCE:
		return date_cmp(k->type, (int64_t)(m->internal_date_ms / DAY_MS), k->day_num);
	case SEARCH_SAVEDBEFORE:
	case SEARCH_SAVEDON:
	case SEARCH_SAVEDSINCE:
		return date_cmp(k->type, (int64_t)(m->save_date_ms / DAY_MS), k->day_num);
	case SEARCH_LARGER: return m->size > k->num;
	case SEARCH_SMALLER: return m->size < k->num;
	case SEARCH_MODSEQ: return m->modseq >= k->num;
	case SEARCH_UID: return in_uidset(k, m->uid);
	default: return false;
	}
}

/* ===== Per-message phases ===== */

static int load_blob(struct ctx *c)
{
	if (c->blob_loaded)
		return 0;
	c->blob_loaded = true;
	c->blob_ok = false;
	if (store_body_mime(c->sh, c->msg->body_hash, &c->blob, &c->error) != 0)
		return -1;
	c->blob_ok = blob_rec(buf_view(&c->blob), blob_first(buf_view(&c->blob)), &c->root);
	return 0;
}

static void fold_into(struct buf *out, struct view v)
{
	struct tconv t;
	buf_reset(out);
	tconv_init(&t, CS_UTF8);
	tconv_feed(&t, v.ptr, v.len, out);
	tconv_finish(&t, out);
}

static bool match_whole(struct pnode *n, struct view folded)
{
	size_t q = 0;
	return needle_feed(&n->nd, &q, folded.ptr, folded.len);
}

static int64_t sent_day(struct ctx *c)
{
	struct view date = { NULL, 0 };
	struct search_datetime dt;
	if (c->blob_ok && tlv_find(c->root.tlv, TG_DATE, take_first, &date) &&
	    search_parse_rfc5322_date(date, &dt) == 0)
		return search_days_from_civil(dt.year, dt.month, dt.day);
	return (int64_t)(c->msg->internal_date_ms / DAY_MS);
}

static void phase_blob(struct ctx *c)
{
	int64_t sday = INT64_MIN;
	for (size_t i = 0; i < c->n_nodes; i++) {
		struct pnode *n = &c->nodes[i];
		if (!c->want[i] || n->cls != LC_BLOB)
			continue;
		const struct search_key *k = n->k;
		bool r = false;
		if (k->type >= SEARCH_SENTBEFORE && k->type <= SEARCH_SENTSINCE) {
			if (sday == INT64_MIN)
				sday = sent_day(c);
			r = date_cmp(k->type, sday, k->day_num);
		} else if (c->blob_ok) {
			enum mime_search_field f = k->type == SEARCH_BCC    ? MIME_SEARCH_BCC
						   : k->type == SEARCH_CC   ? MIME_SEARCH_CC
						   : k->type == SEARCH_FROM ? MIME_SEARCH_FROM
						   : k->type == SEARCH_TO   ? MIME_SEARCH_TO
									    : MIME_SEARCH_SUBJECT;
			struct view v;
			if (mime_blob_search_text(buf_view(&c->blob), f, &v) == 0) {
				fold_into(&c->folded, v);
				r = match_whole(n, buf_view(&c->folded));
			}
		}
		c->val[i] = r ? T_TRUE : T_FALSE;
	}
}

static const char *field_of(enum search_key_type t)
{
	switch (t) {
	case SEARCH_BCC: return "bcc";
	case SEARCH_CC: return "cc";
	case SEARCH_FROM: return "from";
	case SEARCH_TO: return "to";
	default: return "subject";
	}
}

static bool is_fws(uint8_t ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static bool name_eq(struct view name, const char *want, size_t want_len)
{
	return name.len == want_len && strncasecmp((const char *)name.ptr, want, want_len) == 0;
}

/* One complete field of the top-level header. */
static void header_field(struct ctx *c)
{
	struct view f = buf_view(&c->field);
	if (f.len == 0)
		return;
	const uint8_t *colon = memchr(f.ptr, ':', f.len);
	if (!colon)
		return;
	struct view name = view_make(f.ptr, (size_t)(colon - f.ptr));
	while (name.len && (name.ptr[name.len - 1] == ' ' || name.ptr[name.len - 1] == '\t'))
		name.len--;
	struct view val = view_make(colon + 1, (size_t)(f.ptr + f.len - colon - 1));
	while (val.len && is_fws(val.ptr[0])) {
		val.ptr++;
		val.len--;
	}
	while (val.len && is_fws(val.ptr[val.len - 1]))
		val.len--;
	bool decoded = false, text_ready = false, value_ready = false, changed = false;
	for (size_t i = 0; i < c->n_nodes; i++) {
		struct pnode *n = &c->nodes[i];
		if (!c->want[i] || c->val[i] != T_UNK)
			continue;
		const struct search_key *k = n->k;
		bool is_text = k->type == SEARCH_TEXT;
		if (!is_text) {
			const char *fname = k->type == SEARCH_HEADER ? k->field : field_of(k->type);
			if (!name_eq(name, fname, strlen(fname)))
				continue;
			if (k->str_len == 0) {
				c->val[i] = T_TRUE;
				changed = true;
				continue;
			}
		}
		if (!decoded) {
			buf_reset(&c->dec);
			mime_decode_header(val, &c->dec);
			decoded = true;
		}
		struct buf *hay = is_text ? &c->tfold : &c->folded;
		bool *ready = is_text ? &text_ready : &value_ready;
		if (!*ready) {
			buf_reset(&c->conv);
			if (is_text) {
				buf_append(&c->conv, name.ptr, name.len);
				buf_append(&c->conv, ": ", 2);
			}
			buf_append(&c->conv, c->dec.data, c->dec.len);
			fold_into(hay, buf_view(&c->conv));
			*ready = true;
		}
		if (match_whole(n, buf_view(hay))) {
			c->val[i] = T_TRUE;
			changed = true;
		}
	}
	if (changed && eval(c, 0) != T_UNK)
		c->hdr_stop = true;
}

static void field_append(struct ctx *c, const uint8_t *p, size_t n)
{
	size_t room = SEARCH_FIELD_MAX - c->field.len;
	if (n > room)
		n = room;
	if (n)
		buf_append(&c->field, p, n);
}

static int header_piece(void *arg, const uint8_t *p, size_t n)
{
	struct ctx *c = arg;
	size_t i = 0;
	while (i < n && !c->hdr_stop) {
		if (c->hdr_bol) {
			c->hdr_bol = false;
			uint8_t ch = p[i];
			if (ch == ' ' || ch == '\t') {
				/* continuation line: stays in the field */
			} else {
				header_field(c);
				buf_reset(&c->field);
				if (ch == '\r' || ch == '\n') {
					c->hdr_stop = true; /* the empty line */
					break;
				}
			}
		}
		const uint8_t *nl = memchr(p + i, '\n', n - i);
		size_t end = nl ? (size_t)(nl - p) + 1 : n;
		field_append(c, p + i, end - i);
		i = end;
		if (nl)
			c->hdr_bol = true;
	}
	return c->hdr_stop ? 1 : 0;
}

static int phase_header(struct ctx *c)
{
	buf_reset(&c->field);
	c->hdr_bol = true;
	c->hdr_stop = false;
	if (c->blob_ok) {
		if (store_body_read(c->sh, c->msg->body_hash, c->root.hdr_start, c->root.hdr_len,
				    header_piece, c, &c->error) != 0)
			return -1;
		if (!c->hdr_stop)
			header_field(c);
	}
	buf_reset(&c->field);
	/* What was not found is false, except TEXT, which still has the body. */
	for (size_t i = 0; i < c->n_nodes; i++)
		if (c->want[i] && c->val[i] == T_UNK && c->nodes[i].cls == LC_HEADER)
			c->val[i] = T_FALSE;
	return 0;
}

static bool view_is(struct view v, const char *s)
{
	return view_eq_nocase(v, s);
}

static void collect_parts(struct ctx *c)
{
	struct view blob = buf_view(&c->blob);
	struct brec r;
	c->n_parts = 0;
	uint64_t nodes = le(blob.ptr + 8, 4); /* blob_ok: the header is there */
	for (size_t off = c->root.off; nodes-- > 0 && blob_rec(blob, off, &r); off += r.rec_len) {
		if (r.kind != BK_LEAF || r.body_len == 0)
			continue;
		struct view type = { NULL, 0 }, cte = { NULL, 0 }, cs = { NULL, 0 };
		if (!tlv_find(r.tlv, TG_TYPE, take_first, &type) || !view_is(type, "text"))
			continue;
		tlv_find(r.tlv, TG_CTE, take_first, &cte);
		tlv_find(r.tlv, TG_PARAM, take_charset, &cs);
		if (c->n_parts == c->cap_parts) {
			c->cap_parts = c->cap_parts ? c->cap_parts * 2 : 8;
			c->parts = xrealloc(c->parts, c->cap_parts * sizeof(*c->parts));
		}
		struct body_part *bp = &c->parts[c->n_parts];
		bp->start = r.body_start;
		bp->end = r.body_start + r.body_len;
		bp->cte = mime_cte_parse(cte);
		bp->cs = charset_lookup(cs);
		if (bp->end < bp->start || (c->n_parts && bp->start < c->parts[c->n_parts - 1].end))
			continue; /* not in order: a corrupt description, skip */
		c->n_parts++;
	}
}

/* Runs the wanted body needles over converted text. */
static void body_match(struct ctx *c, struct view text)
{
	bool changed = false;
	for (size_t i = 0; i < c->n_nodes; i++) {
		if (!c->want[i] || c->val[i] != T_UNK)
			continue;
		if (needle_feed(&c->nodes[i].nd, &c->q[i], text.ptr, text.len)) {
			c->val[i] = T_TRUE;
			changed = true;
		}
	}
	if (changed && eval(c, 0) != T_UNK)
		c->body_stop = true;
}

static void part_begin(struct ctx *c, const struct body_part *bp)
{
	c->md_raw = mime_decoder_init(&c->md, bp->cte) != 0;
	tconv_init(&c->tc, bp->cs);
	for (size_t i = 0; i < c->n_nodes; i++)
		c->q[i] = 0;
	c->part_active = true;
}

static void part_text(struct ctx *c, const uint8_t *p, size_t n, bool finish)
{
	buf_reset(&c->dec);
	if (c->md_raw)
		buf_append(&c->dec, p, n);
	else if (n)
		mime_decoder_feed(&c->md, p, n, &c->dec);
	if (finish && !c->md_raw)
		mime_decoder_finish(&c->md, &c->dec);
	buf_reset(&c->conv);
	tconv_feed(&c->tc, c->dec.data, c->dec.len, &c->conv);
	if (finish)
		tconv_finish(&c->tc, &c->conv);
	if (c->conv.len)
		body_match(c, buf_view(&c->conv));
}

static void part_end(struct ctx *c)
{
	if (c->part_active)
		part_text(c, NULL, 0, true);
	c->part_active = false;
	c->part_i++;
}

static int body_piece(void *arg, const uint8_t *p, size_t n)
{
	struct ctx *c = arg;
	while (!c->body_stop && c->part_i < c->n_parts) {
		const struct body_part *bp = &c->parts[c->part_i];
		if (c->pos >= bp->end) {
			part_end(c);
			continue;
		}
		if (n == 0)
			break;
		if (c->pos < bp->start) {
			size_t skip = (size_t)MIN((uint64_t)n, bp->start - c->pos);
			p += skip;
			n -= skip;
			c->pos += skip;
			continue;
		}
		if (!c->part_active)
			part_begin(c, bp);
		size_t take = (size_t)MIN((uint64_t)n, bp->end - c->pos);
		take = MIN(take, (size_t)BODY_SLICE);
		part_text(c, p, take, false);
		p += take;
		n -= take;
		c->pos += take;
	}
	return c->body_stop || c->part_i >= c->n_parts ? 1 : 0;
}

static int phase_body(struct ctx *c)
{
	if (c->blob_ok)
		collect_parts(c);
	else
		c->n_parts = 0;
	if (c->n_parts) {
		c->part_i = 0;
		c->part_active = false;
		c->body_stop = false;
		c->pos = c->parts[0].start;
		uint64_t end = c->parts[c->n_parts - 1].end;
		if (store_body_read(c->sh, c->msg->body_hash, c->pos, end - c->pos, body_piece,
				    c, &c->error) != 0)
			return -1;
		/* A body shorter than its description: end the open part. */
		if (!c->body_stop && c->part_active)
			part_end(c);
	}
	for (size_t i = 0; i < c->n_nodes; i++)
		if (c->want[i] && c->val[i] == T_UNK)
			c->val[i] = T_FALSE;
	return 0;
}

/* 1 if the message matches, 0 if not, -1 on a storage error. */
static int match_message(struct ctx *c, const struct msg_info *m)
{
	c->msg = m;
	c->blob_loaded = false;
	c->blob_ok = false;
	for (size_t i = 0; i < c->n_nodes; i++) {
		struct pnode *n = &c->nodes[i];
		c->want[i] = false;
		if (n->cls == LC_META)
			c->val[i] = eval_meta(n->k, m) ? T_TRUE : T_FALSE;
		else
			c->val[i] = T_UNK;
	}
	uint8_t r = eval(c, 0);
	static const enum leaf_class phases[] = { LC_BLOB, LC_HEADER, LC_BODY };
	for (size_t ph = 0; ph < ARRAY_LEN(phases) && r == T_UNK; ph++) {
		enum leaf_class cls = phases[ph];
		if (!c->has[cls] && !(cls == LC_HEADER && c->has[LC_BODY]))
			continue; /* nothing of this class in the program */
		memset(c->want, 0, c->n_nodes * sizeof(*c->want));
		size_t cnt = mark_wanted(c, 0, cls);
		if (cnt == 0)
			continue;
		if (load_blob(c) != 0)
			return -1;
		int rc = 0;
		if (cls == LC_BLOB)
			phase_blob(c);
		else if (cls == LC_HEADER)
			rc = phase_header(c);
		else
			rc = phase_body(c);
		if (rc != 0)
			return -1;
		r = eval(c, 0);
	}
	return r == T_TRUE;
}

/* UID bounds implied by the top level (a UID set there, or in its AND). */
static void uid_bounds(const struct search_key *q, uint32_t *lo, uint32_t *hi)
{
	*lo = 1;
	*hi = UINT32_MAX;
	const struct search_key *const *list = &q;
	size_t n = 1;
	if (q->type == SEARCH_AND) {
		list = (const struct search_key *const *)q->children;
		n = q->n_children;
	}
	for (size_t i = 0; i < n; i++) {
		const struct search_key *k = list[i];
		if (!k || k->type != SEARCH_UID)
			continue;
		if (k->n_uids == 0) {
			*lo = 1;
			*hi = 0;
			return;
		}
		*lo = MAX(*lo, k->uids[0].first);
		*hi = MIN(*hi, k->uids[k->n_uids - 1].last);
	}
}

static void ctx_cleanup(struct ctx *c)
{
	for (size_t i = 0; i < c->n_nodes; i++)
		if (c->nodes[i].has_needle)
			needle_cleanup(&c->nodes[i].nd);
	free(c->nodes);
	free(c->kids);
	free(c->val);
	free(c->want);
	free(c->q);
	free(c->parts);
	buf_cleanup(&c->blob);
	buf_cleanup(&c->field);
	buf_cleanup(&c->dec);
	buf_cleanup(&c->folded);
	buf_cleanup(&c->tfold);
	buf_cleanup(&c->conv);
}

int store_search(struct shard *sh, uint64_t mailbox_id, const struct search_key *q,
		 uint32_t **uids_r, size_t *n_r, const char **error_r)
{
	return store_search_modseq(sh, mailbox_id, q, uids_r, NULL, n_r, error_r);
}

int store_search_modseq(struct shard *sh, uint64_t mailbox_id, const struct search_key *q,
			uint32_t **uids_r, uint64_t **modseqs_r, size_t *n_r,
			const char **error_r)
{
	*uids_r = NULL;
	if (modseqs_r)
		*modseqs_r = NULL;
	*n_r = 0;
	struct ctx c;
	memset(&c, 0, sizeof(c));
	c.sh = sh;
	buf_init(&c.blob, 0);
	buf_init(&c.field, 0);
	buf_init(&c.dec, 0);
	buf_init(&c.folded, 0);
	buf_init(&c.tfold, 0);
	buf_init(&c.conv, 0);
	size_t root;
	if (flatten(&c, q, 0, &root) != 0) {
		ctx_cleanup(&c);
		*error_r = "invalid or too deeply nested search program";
		return -1;
	}
	c.val = xcalloc(c.n_nodes, sizeof(*c.val));
	c.want = xcalloc(c.n_nodes, sizeof(*c.want));
	c.q = xcalloc(c.n_nodes, sizeof(*c.q));

	uint32_t lo, hi;
	uid_bounds(q, &lo, &hi);
	uint32_t *all = NULL, *res = NULL;
	uint64_t *mods = NULL;
	size_t n_all = 0, n_res = 0, cap_res = 0;
	int ret = 0;
	if (lo <= hi && store_uids(sh, mailbox_id, &all, &n_all, error_r) != 0) {
		ctx_cleanup(&c);
		return -1;
	}
	size_t i = 0;
	while (i < n_all && all[i] < lo)
		i++;
	while (ret == 0 && i < n_all && all[i] <= hi) {
		size_t j = MIN(n_all, i + FETCH_WINDOW);
		uint32_t last = MIN(all[j - 1], hi);
		struct msg_info *ms = NULL;
		size_t nm = 0;
		if (store_fetch_range(sh, mailbox_id, all[i], last, &ms, &nm, error_r) != 0) {
			ret = -1;
			break;
		}
		for (size_t k = 0; k < nm; k++) {
			if (ret == 0) {
				int m = match_message(&c, &ms[k]);
				if (m < 0) {
					*error_r = c.error ? c.error : "search failed";
					ret = -1;
				} else if (m) {
					if (n_res == cap_res) {
						cap_res = cap_res ? cap_res * 2 : 64;
						res = xrealloc(res, cap_res * sizeof(*res));
						if (modseqs_r)
							mods = xrealloc(mods, cap_res * sizeof(*mods));
					}
					if (modseqs_r)
						mods[n_res] = ms[k].modseq;
					res[n_res++] = ms[k].uid;
				}
			}
			msg_info_cleanup(&ms[k]);
		}
		free(ms);
		i = j;
	}
	free(all);
	ctx_cleanup(&c);
	if (ret != 0) {
		free(res);
		free(mods);
		return -1;
	}
	*uids_r = res;
	if (modseqs_r)
		*modseqs_r = mods;
	*n_r = n_res;
	return 0;
}
