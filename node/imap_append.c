/* APPEND with MULTIAPPEND (RFC 3502), APPENDLIMIT (RFC 7889), literal8
 * messages (RFC 3516) and APPENDUID (RFC 4315).
 *
 * The parser passes every message literal to the sink as it arrives; each
 * message gets its own body_writer (chunks, never one contiguous buffer).
 * Once the command is complete one worker job stores them all with
 * store_append: a single atomic batch, so a MULTIAPPEND is kept whole or
 * not at all. Until then the messages are in memory, so one command may
 * announce at most APPENDLIMIT bytes in total and IMAP_APPEND_MAX_MSGS
 * messages; a synchronizing literal beyond that is refused before the
 * client sends it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "node/imap_internal.h"
#include "node/node.h"

#define IMAP_APPEND_MAX_MSGS 1000

enum append_fail {
	APPEND_FAIL_NONE,
	APPEND_FAIL_LIMIT, /* too many messages or bytes in one command */
	APPEND_FAIL_TOOBIG,
};

void imap_append_reset(struct imap_session *s)
{
	for (unsigned i = 0; i < s->bw_count; i++)
		body_writer_free(&s->bws[i]);
	free(s->bws);
	s->bws = NULL;
	s->bw_count = 0;
	s->bw_bytes = 0;
	s->bw_fail = APPEND_FAIL_NONE;
}

static void reply_fail(struct imap_session *s, enum append_fail why)
{
	if (why == APPEND_FAIL_LIMIT)
		imap_reply(s, "%s NO [LIMIT] At most %u messages and %llu bytes in one APPEND\r\n",
			   s->tag, IMAP_APPEND_MAX_MSGS,
			   (unsigned long long)node_max_message(s->node));
	else if (why == APPEND_FAIL_TOOBIG)
		imap_reply(s, "%s NO [TOOBIG] Message too large\r\n", s->tag);
	else
		imap_reply(s, "%s NO [SERVERBUG] Message not received\r\n", s->tag);
}

bool imap_append_refused(struct imap_session *s)
{
	enum append_fail why = s->bw_fail;
	if (why == APPEND_FAIL_NONE)
		return false;
	imap_append_reset(s);
	reply_fail(s, why);
	return true;
}

static int sink_begin(void *ctx, uint64_t size, bool literal8)
{
	struct imap_session *s = ctx;
	UNUSED(literal8);
	if (!s->sh || s->bw_fail != APPEND_FAIL_NONE)
		return -1;
	if (s->bw_count >= IMAP_APPEND_MAX_MSGS ||
	    size > node_max_message(s->node) - s->bw_bytes) {
		imap_append_reset(s);
		s->bw_fail = APPEND_FAIL_LIMIT;
		return -1;
	}
	s->bws = xrealloc(s->bws, (s->bw_count + 1) * sizeof(*s->bws));
	s->bws[s->bw_count++] = body_writer_new(s->sh);
	s->bw_bytes += size;
	return 0;
}

static int sink_data(void *ctx, const uint8_t *data, size_t len)
{
	struct imap_session *s = ctx;
	if (s->bw_fail != APPEND_FAIL_NONE || s->bw_count == 0)
		return -1;
	if (body_writer_add(s->bws[s->bw_count - 1], data, len) < 0) {
		imap_append_reset(s);
		s->bw_fail = APPEND_FAIL_TOOBIG;
		return -1;
	}
	return 0;
}

static int sink_end(void *ctx)
{
	UNUSED(ctx);
	return 0;
}

const struct imap_literal_sink imap_append_sink_ops = {
	.begin = sink_begin,
	.data = sink_data,
	.end = sink_end,
	.ctx = NULL,
};

static void append_run(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	size_t n = cmd->u.append.count;
	char name[MAILBOX_NAME_MAX];
	imap_view_cstr(cmd->u.append.mailbox, name, sizeof(name));
	struct mailbox_info mi;
	enum storage_status st = ST_OK;
	const char *err = NULL;
	if (store_mailbox_get(s->sh, s->user, name, &mi, &st, &err) < 0) {
		if (st == ST_NOT_FOUND)
			buf_printf(&s->out, "%s NO [TRYCREATE] Mailbox does not exist\r\n", s->tag);
		else
			buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
		return;
	}
	struct append_msg *am = xcalloc(n, sizeof(*am));
	char ***kw = xcalloc(n, sizeof(*kw));
	for (size_t i = 0; i < n; i++) {
		const struct imap_append_msg *m = &cmd->u.append.msgs[i];
		/* checked on the loop already */
		imap_parse_flags(m->flags, m->flag_count, &am[i].flags, &kw[i], &err);
		am[i].keywords = (const char *const *)kw[i];
		am[i].bw = s->bws[i];
		if (m->has_date) {
			int64_t t = imap_datetime_to_unix(&m->date);
			/* before 1970: the epoch itself (0 would mean "now") */
			am[i].internal_date_ms = t > 0 ? (uint64_t)t * 1000 : 1;
		}
	}
	uint32_t uidvalidity = 0;
	int r = store_append(s->sh, s->user, mi.id, am, n, &uidvalidity, &st, &err);
	for (size_t i = 0; i < n; i++)
		imap_keywords_free(&kw[i]);
	free(kw);
	if (r < 0) {
		free(am);
		switch (st) {
		case ST_OVER_QUOTA:
			buf_printf(&s->out, "%s NO [OVERQUOTA] Quota exceeded\r\n", s->tag);
			break;
		case ST_TOO_LARGE:
			buf_printf(&s->out, "%s NO [TOOBIG] Message too large\r\n", s->tag);
			break;
		case ST_NOT_FOUND:
			buf_printf(&s->out, "%s NO [TRYCREATE] Mailbox does not exist\r\n", s->tag);
			break;
		case ST_INVALID:
			buf_printf(&s->out, "%s NO [LIMIT] Mailbox has no UIDs left\r\n", s->tag);
			break;
		case ST_DISABLED:
			buf_printf(&s->out, "%s NO [NOPERM] Account disabled\r\n", s->tag);
			break;
		default:
			LOG_WARN("imap", s->id, "append_failed", "reason=\"%s\"", err ? err : "");
			buf_printf(&s->out, "%s NO [SERVERBUG] Storage error\r\n", s->tag);
			break;
		}
		return;
	}
	if (s->state == IMAP_STATE_SELECTED && mi.id == s->sel_id)
		imap_sync_selected(s);
	uint32_t *uids = xmalloc(n * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		uids[i] = am[i].uid_r;
	free(am);
	buf_printf(&s->out, "%s OK [APPENDUID %u ", s->tag, uidvalidity);
	imap_put_set(&s->out, uids, n);
	buf_printf(&s->out, "] APPEND completed\r\n");
	free(uids);
}

static void append_done(struct imap_session *s)
{
	imap_append_reset(s);
}

void imap_cmd_append(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	size_t n = cmd->u.append.count;
	if (cmd->u.append.sink_failed || s->bw_fail != APPEND_FAIL_NONE) {
		enum append_fail why = s->bw_fail;
		imap_append_reset(s);
		reply_fail(s, why);
		return;
	}
	/* Messages not streamed (a parser without the sink) are copied into
	 * writers here; streamed ones are there already, in order. */
	unsigned streamed = 0;
	for (size_t i = 0; i < n; i++)
		streamed += cmd->u.append.msgs[i].streamed;
	if (streamed != s->bw_count || n > IMAP_APPEND_MAX_MSGS) {
		imap_append_reset(s);
		imap_reply(s, "%s NO [SERVERBUG] Message not received\r\n", s->tag);
		return;
	}
	if (streamed < n) {
		struct body_writer **all = xcalloc(n, sizeof(*all));
		unsigned k = 0;
		for (size_t i = 0; i < n; i++) {
			const struct imap_append_msg *m = &cmd->u.append.msgs[i];
			if (m->streamed) {
				all[i] = s->bws[k++];
				continue;
			}
			all[i] = body_writer_new(s->sh);
			body_writer_add(all[i], m->data.ptr, m->data.len); /* size checked below */
		}
		free(s->bws);
		s->bws = all;
		s->bw_count = (unsigned)n;
	}
	for (size_t i = 0; i < n; i++) {
		const struct imap_append_msg *m = &cmd->u.append.msgs[i];
		uint32_t bits;
		char **kw = NULL;
		const char *err = NULL;
		if (imap_parse_flags(m->flags, m->flag_count, &bits, &kw, &err) < 0) {
			imap_append_reset(s);
			imap_bad(s, err);
			return;
		}
		imap_keywords_free(&kw);
		if (m->size == 0) {
			/* RFC 3502 6.3.11: the way to cancel a MULTIAPPEND */
			imap_append_reset(s);
			imap_reply(s, "%s NO Zero-length message literal: APPEND cancelled\r\n",
				   s->tag);
			return;
		}
		if (body_writer_size(s->bws[i]) != m->size) {
			imap_append_reset(s);
			imap_reply(s, "%s NO [TOOBIG] Message too large\r\n", s->tag);
			return;
		}
	}
	imap_post(s, append_run, append_done);
}
