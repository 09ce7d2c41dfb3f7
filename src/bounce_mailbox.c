/*
 * bounce_mailbox.c
 *		The delivery worker reads the bounce mailbox over IMAP.
 *
 * With settings.bounce_mailbox_url (imap:// or imaps://), every
 * aimroute.bounce_mailbox_interval the delivery worker, between its rounds
 * of sending, logs in to the mailbox with libcurl, asks for its
 * UIDVALIDITY (STATUS), then for the UIDs above the highest it handled
 * (UID SEARCH), and fetches each message (UID FETCH ... BODY[], which also
 * marks it \Seen).  Each is recorded by aimroute.bounce_mailbox_record in a
 * transaction of its own, which calls record_dsn and moves the position
 * (aimroute.bounce_mailbox_state) past the message in the same commit: a
 * worker that stops between a fetch and its record fetches the message
 * again, and one recorded is never fetched again.  No transaction is open
 * while the network is waited on.
 *
 * SQL judges the messages (which is a DSN, what it records); this file
 * only moves them, as delivery_worker.c does for the sends.
 */
#include "postgres.h"

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "delivery.h"
#include "worker.h"

#define MESSAGE_MAX	  (16 * 1024 * 1024) /* bytes of one message read, at most */
#define UIDS_PER_LOOK 500				 /* messages read in one look, at most */

/* The mailbox, as the settings name it, and how to reach it. */
typedef struct Mailbox
{
	char *url;		/* as in settings: the key of bounce_mailbox_state */
	char *box_url;	/* the mailbox's URL without ;parameters or ?query */
	char *root_url; /* the server's, without the mailbox */
	char *name;		/* the mailbox's name, INBOX when the URL names none */
	char *username;
	char *password;
	bool tls_required;
} Mailbox;

static int bounce_mailbox_interval = 60;
static TimestampTz next_look = 0;
static MemoryContext look_context = NULL;

static bool ReadSettings(Mailbox *m);
static bool SplitUrl(Mailbox *m);
static CURL *Connect(Mailbox *m, const char *ca_file, int timeout, StringInfo body, char *error);
static bool Run(CURL *h, const char *url, const char *command, StringInfo body, char *error,
				const char **failure, bool *too_large);
static size_t KeepText(char *data, size_t size, size_t nitems, void *arg);
static int StopOnShutdown(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
						  curl_off_t ulnow);
static uint64 *ParseSearch(const char *text, uint64 after, int *n);
static char *AsDatabaseText(StringInfo raw);
static void Look(Mailbox *m, const char *ca_file, int timeout);
static void NoteFailure(const Mailbox *m, const char *what);
static void CommitLook(void);

/*
 * BounceMailboxInit defines the bounce mailbox's setting.
 */
void
BounceMailboxInit(void)
{
	DefineCustomIntVariable(
		"aimroute.bounce_mailbox_interval",
		"How often the delivery worker reads the bounce mailbox (settings.bounce_mailbox_url).",
		"It reads it between rounds of sending.", &bounce_mailbox_interval, 60, 1, 86400,
		PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
}

/*
 * BounceMailboxRound reads the bounce mailbox when its interval has passed
 * since the last look, and returns the milliseconds until the next look.
 * ca_file and timeout are the worker's (aimroute.tls_ca_file,
 * aimroute.delivery_timeout, for each IMAP command).
 */
long
BounceMailboxRound(const char *ca_file, int timeout)
{
	TimestampTz now = GetCurrentTimestamp();
	Mailbox m;
	long secs;
	int usecs;

	if (now < next_look)
	{
		TimestampDifference(now, next_look, &secs, &usecs);
		return secs * 1000L + (usecs + 999) / 1000;
	}
	next_look = TimestampTzPlusMilliseconds(now, bounce_mailbox_interval * 1000L);
	if (look_context == NULL)
		look_context = AllocSetContextCreate(TopMemoryContext, "aimroute bounce mailbox",
											 ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(look_context);
	memset(&m, 0, sizeof(m));
	if (ReadSettings(&m))
		Look(&m, ca_file, timeout);
	return bounce_mailbox_interval * 1000L;
}

/*
 * CommitLook commits a transaction of a look.  A commit leaves
 * TopMemoryContext current: back to look_context, which the next look
 * resets, so that nothing a look allocates outlives it.
 */
static void
CommitLook(void)
{
	WorkerCommitTransaction();
	MemoryContextSwitchTo(look_context);
}

/*
 * ReadSettings reads the mailbox's settings into m, in look_context;
 * false when none is set, or the database is not updated to 0.2.0.
 */
static bool
ReadSettings(Mailbox *m)
{
	static const char *const sql =
		"SELECT j OPERATOR(pg_catalog.->>) 'bounce_mailbox_url',"
		" j OPERATOR(pg_catalog.->>) 'bounce_mailbox_username',"
		" j OPERATOR(pg_catalog.->>) 'bounce_mailbox_password',"
		" j OPERATOR(pg_catalog.->>) 'smtp_tls'"
		" FROM (SELECT pg_catalog.to_jsonb(s) AS j FROM aimroute.settings s) x";
	bool found = false;

	if (WorkerBeginTransaction("aimroute: reading the bounce mailbox's settings") &&
		WorkerHasFunction("bounce_mailbox_record"))
	{
		if (SPI_execute(sql, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "delivery worker: could not read the bounce mailbox's settings");
		if (SPI_processed == 1)
		{
			HeapTuple row = SPI_tuptable->vals[0];
			TupleDesc desc = SPI_tuptable->tupdesc;
			char *url = SPI_getvalue(row, desc, 1);
			char *user = SPI_getvalue(row, desc, 2);
			char *password = SPI_getvalue(row, desc, 3);
			char *tls = SPI_getvalue(row, desc, 4);

			if (url != NULL)
			{
				m->url = MemoryContextStrdup(look_context, url);
				m->username = user ? MemoryContextStrdup(look_context, user) : NULL;
				m->password = password ? MemoryContextStrdup(look_context, password) : NULL;
				m->tls_required = tls != NULL && strcmp(tls, "required") == 0;
				found = true;
			}
		}
	}
	WorkerCommitTransaction();
	return found;
}

/*
 * SplitUrl finds, in m->url, the mailbox's name and the URLs of the server
 * and of the mailbox; false (with a WARNING) when libcurl cannot parse it.
 */
static bool
SplitUrl(Mailbox *m)
{
	CURLU *u = curl_url();
	char *path = NULL;
	char *root = NULL;
	MemoryContext old = MemoryContextSwitchTo(look_context);
	bool ok = false;

	if (u != NULL && curl_url_set(u, CURLUPART_URL, m->url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_PATH, &path, CURLU_URLDECODE) == CURLUE_OK &&
		curl_url_set(u, CURLUPART_PATH, "/", 0) == CURLUE_OK &&
		curl_url_set(u, CURLUPART_QUERY, NULL, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_URL, &root, 0) == CURLUE_OK)
	{
		char *name = pstrdup(path[0] == '/' ? path + 1 : path);
		char *escaped;

		name[strcspn(name, ";")] = '\0';
		if (name[0] == '\0')
			name = pstrdup("INBOX");
		m->name = name;
		m->root_url = pstrdup(root);
		escaped = curl_easy_escape(NULL, name, 0);
		m->box_url = psprintf("%s%s", m->root_url, escaped);
		curl_free(escaped);
		/* A name IMAP would need a literal for is not asked for. */
		ok = strpbrk(name, "\"\\\r\n") == NULL;
	}
	if (!ok)
		ereport(WARNING,
				(errmsg("aimroute delivery worker: cannot read the bounce mailbox \"%s\"", m->url),
				 errhint("Set settings.bounce_mailbox_url to an imap:// or imaps:// URL whose path "
						 "is the mailbox, such as imaps://mail.oem.example/INBOX.")));
	curl_free(path);
	curl_free(root);
	curl_url_cleanup(u);
	MemoryContextSwitchTo(old);
	return ok;
}

/*
 * KeepText is libcurl's write callback: it appends to a StringInfo, and
 * ends the transfer past MESSAGE_MAX bytes.
 */
static size_t
KeepText(char *data, size_t size, size_t nitems, void *arg)
{
	StringInfo s = (StringInfo) arg;
	size_t n = size * nitems;

	if (s->len + n > MESSAGE_MAX)
		return 0;
	appendBinaryStringInfo(s, data, (int) n);
	return n;
}

/*
 * StopOnShutdown is libcurl's progress callback: it ends a transfer when
 * the worker is asked to stop.
 */
static int
StopOnShutdown(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			   curl_off_t ulnow)
{
	return ProcDiePending ? 1 : 0;
}

/*
 * Connect makes the easy handle of one look: the login, TLS, the limits.
 * The connection is made by the first command and kept for the others.
 */
static CURL *
Connect(Mailbox *m, const char *ca_file, int timeout, StringInfo body, char *error)
{
	CURL *h = curl_easy_init();

	if (h == NULL)
		elog(ERROR, "delivery worker: could not create a libcurl handle");
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "imap,imaps");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long) timeout);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long) Min(timeout, 10));
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, StopOnShutdown);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, KeepText);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
	/* imap://: STARTTLS when offered; required as SMTP's is (settings.smtp_tls). */
	curl_easy_setopt(h, CURLOPT_USE_SSL,
					 (long) (m->tls_required ? CURLUSESSL_ALL : CURLUSESSL_TRY));
	if (ca_file != NULL && ca_file[0] != '\0')
		curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
	if (m->username != NULL)
		curl_easy_setopt(h, CURLOPT_USERNAME, m->username);
	if (m->password != NULL)
		curl_easy_setopt(h, CURLOPT_PASSWORD, m->password);
	return h;
}

/*
 * Run runs one IMAP command on url (command NULL: a FETCH of the URL's
 * ;UID=), what the server answered in body; false, with *failure, when it
 * failed, and *too_large when that was an answer of more than MESSAGE_MAX
 * bytes (the connection is closed then).
 */
static bool
Run(CURL *h, const char *url, const char *command, StringInfo body, char *error,
	const char **failure, bool *too_large)
{
	CURLcode rc;

	*too_large = false;
	resetStringInfo(body);
	error[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, command);
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK)
		return true;
	if (rc == CURLE_USE_SSL_FAILED)
		*failure = "the server does not offer STARTTLS and settings.smtp_tls is 'required': no "
				   "login was sent";
	else if (rc == CURLE_WRITE_ERROR)
	{
		*failure = psprintf("a message of more than %d bytes", MESSAGE_MAX);
		*too_large = true;
	}
	else
		*failure = pstrdup(error[0] != '\0' ? error : curl_easy_strerror(rc));
	return false;
}

/*
 * ParseSearch returns the UIDs of an untagged SEARCH response that are
 * above after, in ascending order, UIDS_PER_LOOK at most; *n their count.
 * ("n:*" always names the highest UID, even one below n.)
 */
static uint64 *
ParseSearch(const char *text, uint64 after, int *n)
{
	uint64 *uids = palloc(sizeof(uint64) * UIDS_PER_LOOK);
	const char *p = strstr(text, "* SEARCH");

	*n = 0;
	if (p == NULL)
		return uids;
	p += strlen("* SEARCH");
	while (*p == ' ')
	{
		char *end;
		uint64 uid;

		p++;
		uid = strtou64(p, &end, 10);
		if (end == p)
			break;
		p = end;
		/*
		 * Servers answer in order; keep it so whatever they do, and keep the
		 * lowest UIDs: the look records up to the last one it keeps, and a
		 * lower one left out would never be read.  When full, the highest
		 * kept makes room for a lower one.
		 */
		if (uid > after && (*n < UIDS_PER_LOOK || uid < uids[*n - 1]))
		{
			int i = *n < UIDS_PER_LOOK ? (*n)++ : *n - 1;

			while (i > 0 && uids[i - 1] > uid)
			{
				uids[i] = uids[i - 1];
				i--;
			}
			uids[i] = uid;
		}
	}
	return uids;
}

/*
 * AsDatabaseText makes a message fetched text of the database: as it is
 * when it is valid UTF-8 in a UTF-8 database, else with every byte that is
 * not printable ASCII (NUL, 8-bit) as '?', which the DSN's own fields, all
 * ASCII, come through.
 */
static char *
AsDatabaseText(StringInfo raw)
{
	char *text = pnstrdup(raw->data, raw->len);

	if (GetDatabaseEncoding() == PG_UTF8 && pg_verify_mbstr(PG_UTF8, raw->data, raw->len, true) &&
		memchr(raw->data, '\0', raw->len) == NULL)
		return text;
	for (int i = 0; i < raw->len; i++)
	{
		unsigned char c = (unsigned char) text[i];

		if (c == '\0' || c > 0x7e)
			text[i] = '?';
	}
	return text;
}

/*
 * NoteFailure logs why a look at the mailbox failed and notes it in
 * bounce_mailbox_state.last_error.
 */
static void
NoteFailure(const Mailbox *m, const char *what)
{
	Oid types[2] = { TEXTOID, TEXTOID };
	Datum args[2];

	ereport(
		WARNING,
		(errmsg("aimroute delivery worker: could not read the bounce mailbox %s: %s", m->url, what),
		 errhint(
			 "Check settings.bounce_mailbox_url, bounce_mailbox_username and "
			 "bounce_mailbox_password; it is tried again in aimroute.bounce_mailbox_interval.")));
	if (WorkerBeginTransaction("aimroute: noting a failure to read the bounce mailbox"))
	{
		args[0] = CStringGetTextDatum(m->url);
		args[1] = CStringGetTextDatum(what);
		if (SPI_execute_with_args("SELECT aimroute.bounce_mailbox_failed($1, $2)", 2, types, args,
								  NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "delivery worker: could not note a failure to read the bounce mailbox");
	}
	CommitLook();
}

/*
 * Look reads the mailbox's new messages and records each.
 */
static void
Look(Mailbox *m, const char *ca_file, int timeout)
{
	MemoryContext old = MemoryContextSwitchTo(look_context);
	char error[CURL_ERROR_SIZE];
	StringInfoData body;
	const char *failure = NULL;
	const char *p;
	uint64 uidvalidity = 0;
	uint64 position = 0;
	uint64 *uids;
	int n;
	int handled = 0;
	int bounces = 0;
	bool too_large = false;
	CURL *h;

	if (!SplitUrl(m))
	{
		MemoryContextSwitchTo(old);
		return;
	}
	initStringInfo(&body);
	h = Connect(m, ca_file, timeout, &body, error);

	/* Its UIDVALIDITY: a mailbox made again numbers its messages anew. */
	if (!Run(h, m->root_url, psprintf("STATUS \"%s\" (UIDVALIDITY)", m->name), &body, error,
			 &failure, &too_large))
		goto fail;
	p = strstr(body.data, "UIDVALIDITY ");
	if (p == NULL || (uidvalidity = strtou64(p + strlen("UIDVALIDITY "), NULL, 10)) == 0)
	{
		failure = "the server's STATUS reply has no UIDVALIDITY";
		goto fail;
	}
	if (WorkerBeginTransaction("aimroute: reading the bounce mailbox"))
	{
		Oid types[2] = { TEXTOID, INT8OID };
		Datum args[2] = { CStringGetTextDatum(m->url), Int64GetDatum((int64) uidvalidity) };
		bool isnull;

		if (SPI_execute_with_args("SELECT aimroute.bounce_mailbox_position($1, $2)", 2, types, args,
								  NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "delivery worker: could not read the bounce mailbox's position");
		position = (uint64) DatumGetInt64(
			SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	CommitLook();

	if (!Run(h, m->box_url, psprintf("UID SEARCH UID " UINT64_FORMAT ":*", position + 1), &body,
			 error, &failure, &too_large))
		goto fail;
	uids = ParseSearch(body.data, position, &n);

	for (int i = 0; i < n && !ProcDiePending; i++)
	{
		Oid types[4] = { TEXTOID, INT8OID, INT8OID, TEXTOID };
		Datum args[4];
		Datum result;
		bool isnull = true;

		if (!Run(h, psprintf("%s;UID=" UINT64_FORMAT, m->box_url, uids[i]), NULL, &body, error,
				 &failure, &too_large) &&
			!too_large)
			goto fail;
		if (!WorkerBeginTransaction("aimroute: recording a message of the bounce mailbox"))
		{
			CommitLook();
			break;
		}
		args[0] = CStringGetTextDatum(m->url);
		args[1] = Int64GetDatum((int64) uidvalidity);
		args[2] = Int64GetDatum((int64) uids[i]);
		/* Too large: NULL, which it skips with a WARNING. */
		args[3] = too_large ? (Datum) 0 : CStringGetTextDatum(AsDatabaseText(&body));
		if (SPI_execute_with_args("SELECT aimroute.bounce_mailbox_record($1, $2, $3, $4)", 4, types,
								  args, too_large ? "   n" : NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "delivery worker: could not record a message of the bounce mailbox");
		result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			bounces += DatumGetInt32(result);
		CommitLook();
		/* NULL: its record failed, and it is tried again at the next look. */
		if (isnull)
			break;
		handled++;
	}
	if (handled > 0)
		ereport(
			LOG,
			(errmsg_plural(
				"aimroute delivery worker: read %d message of the bounce mailbox %s, %d bounces recorded",
				"aimroute delivery worker: read %d messages of the bounce mailbox %s, %d bounces recorded",
				handled, handled, m->url, bounces)));
	curl_easy_cleanup(h);
	MemoryContextSwitchTo(old);
	return;

fail:
	curl_easy_cleanup(h);
	/* A shutdown ends the transfer: that is no failure of the mailbox. */
	if (!ProcDiePending)
		NoteFailure(m, failure);
	MemoryContextSwitchTo(old);
}
