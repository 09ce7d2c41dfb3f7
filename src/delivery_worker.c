/*
 * delivery_worker.c
 *		The background worker that sends lead notices by SMTP and HTTP.
 *
 * One worker per database of aimroute.database, registered with the
 * re-route worker when the library is preloaded; like it, it starts once
 * the server accepts writes, so a hot standby sends nothing.
 *
 * A round: expand the leads routing marked to be sent into their notices
 * and messages (aimroute.delivery_expand, set-based, a batch a
 * transaction); queue the daily recap when its hour has come; then, while
 * messages are due or transfers are in flight, expanding again before each
 * claim, claim due messages (aimroute.delivery_claim: FOR UPDATE SKIP
 * LOCKED, a lease, rendered by SQL) and commit; send them through one
 * libcurl multi handle with no transaction open, many at once; record the
 * outcomes of the transfers that ended (aimroute.delivery_record), several
 * in one short transaction.  A worker that dies after sending and before
 * recording leaves the message 'sending'; the restarted worker takes it
 * back and sends it again with the same Message-ID or Idempotency-Key.
 * What is recorded as delivered is never claimed again.
 *
 * No message waits for another (head-of-line blocking): at most
 * aimroute.delivery_concurrency transfers run at once, at most
 * aimroute.delivery_endpoint_concurrency of them to one endpoint (an SMTP
 * server, an HTTP host and port), and the claim skips the messages of an
 * endpoint whose slots are all taken, so a CRM that never answers holds
 * only its own slots until aimroute.delivery_timeout, while the others
 * go on.  Free slots are filled from new claims as soon as a transfer ends;
 * the worker waits on its latch and on the transfers' sockets together.
 * Connections stay open in the multi handle's cache from one message to
 * the next, also from one round to the next.
 *
 * Nothing stalls on one bad item (SPEC section 8): a message whose claim or
 * record raises is set aside by SQL (aimroute.set_aside_items) and the
 * others go on; a lead whose expansion raises keeps its mark, with a
 * WARNING (delivery_expand); a daily recap that raises is a WARNING, tried
 * again later.
 *
 * Between rounds the worker sleeps until the earliest due message,
 * aimroute.delivery_naptime at most, or until a backend that queued
 * messages sets its latch at commit.  Outcomes are SQL's to judge (which
 * reply is a bounce, when to retry), so this file only moves bytes and
 * reports libcurl's code, the server's reply code and its text.
 */
#include "postgres.h"

#include <curl/curl.h>

/* CURLOPT_PROTOCOLS_STR, which keeps each handle to its protocols. */
#if LIBCURL_VERSION_NUM < 0x075500
#error "aimroute needs libcurl 7.85.0 or later"
#endif

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "delivery.h"
#include "subxact.h"
#include "reroute_worker.h"
#include "worker.h"

#define RESPONSE_MAX	 1000 /* bytes of a server's reply kept */
#define ENDPOINT_KEY_MAX 256  /* bytes of an endpoint's key kept */
#define RECORD_BATCH	 32	  /* outcomes recorded together, at most */
#define RECORD_DELAY_MS	 20	  /* longest an outcome waits for others to be recorded with */
#define EXPAND_BATCH	 1000 /* marked leads expanded a transaction */

/* One message to send, as delivery_claim() rendered it. */
typedef struct DeliveryJob
{
	int64 message_id;
	int32 attempt;
	bool smtp; /* else HTTP POST */
	char *url;
	char *mail_from;
	char *recipient;
	char *username;
	char *password;
	char *content_type;
	char *message_key;
	char *payload;
} DeliveryJob;

/* What one send came to. */
typedef struct DeliveryOutcome
{
	int curl_code;
	long response_code;
	StringInfoData response;
	char command[9]; /* the last SMTP command sent: MAIL, RCPT, DATA, ...; "" before any */
} DeliveryOutcome;

/* The upload of an SMTP message: what is left to read. */
typedef struct UploadState
{
	const char *data;
	size_t left;
} UploadState;

/*
 * An endpoint: where transfers go, as its URL's scheme and authority in
 * lower case (aimroute.delivery_endpoint computes the same key), and how
 * many of the worker's transfers go there now or wait to.
 */
typedef struct Endpoint
{
	char key[ENDPOINT_KEY_MAX]; /* hash key */
	int running;
	int waiting;
} Endpoint;

/*
 * A claimed message on its way: waiting for a slot, in flight, or done and
 * waiting to be recorded.  It lives in a memory context of its own, which
 * goes once the outcome is recorded or the message given back.
 */
typedef struct Transfer
{
	MemoryContext context;
	DeliveryJob job;
	Endpoint *endpoint;
	CURL *easy; /* while in flight */
	struct curl_slist *list;
	UploadState upload;
	DeliveryOutcome out;
	char error[CURL_ERROR_SIZE];
} Transfer;

/* One statement for RunStatement: its text and arguments. */
typedef struct Statement
{
	const char *sql;
	int nargs;
	Oid *types;
	Datum *args;
} Statement;

/* A socket libcurl asked to be watched, and for what (CURL_POLL_IN ...). */
typedef struct WatchedSocket
{
	curl_socket_t fd;
	int what;
	int position; /* in wait_set; -1 until it is built again */
} WatchedSocket;

/*
 * Shared memory: each database's worker's latch, set by backends of that
 * database that queued messages; a slot per database of aimroute.database.
 */
typedef struct DeliveryShared
{
	struct
	{
		Oid database;
		Latch *latch;
	} workers[AIMROUTE_MAX_DATABASES];
} DeliveryShared;

PGDLLEXPORT void aimroute_delivery_worker_main(Datum arg);

static int delivery_naptime = 10;
static int delivery_batch_size = 50;
static int delivery_timeout = 30;
static int delivery_lease = 300;
static int delivery_concurrency = 32;
static int delivery_endpoint_concurrency = 8;
static char *tls_ca_file = NULL;
static DeliveryShared *delivery_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_at_commit = false;

/* The worker's sending state, in worker_context, for the worker's life. */
static MemoryContext worker_context = NULL;
static CURLM *multi = NULL;
static List *idle_handles = NIL; /* easy handles to use again */
static HTAB *endpoints = NULL;
static List *waiting = NIL;		/* Transfers claimed, not started, oldest first */
static List *running = NIL;		/* Transfers in flight */
static List *done = NIL;		/* Transfers ended, not recorded yet */
static List *cut_short = NIL;	/* Transfers a shutdown ended, to be given back */
static bool room_freed = false; /* a transfer ended, and its endpoint has room */
static WatchedSocket *sockets = NULL;
static int nsockets = 0;
static int max_sockets = 0;
static WaitEventSet *wait_set = NULL;
static bool wait_set_stale = true;
static TimestampTz curl_deadline = -1; /* when libcurl wants its timeout run; -1: never */
static TimestampTz recap_retry_at = 0;
static int recap_failures = 0;
static bool smtp_tls_required = false; /* settings.smtp_tls, as the last claim read it */
static bool plaintext_cached = false;  /* a connection may have been opened under 'try' */

static void DeliveryShmemRequest(void);
static void DeliveryShmemStartup(void);
static void WakeAtCommit(XactEvent event, void *arg);
static char *CopyColumn(HeapTuple row, TupleDesc desc, int column, MemoryContext context);
static int ClaimBatch(int max_messages);
static void EndpointKey(const char *url, char *key);
static Endpoint *EndpointOf(const char *url);
static Datum FullEndpoints(void);
static Datum HeldMessages(void);
static void StartWaiting(void);
static void StartTransfer(Transfer *t);
static void FinishTransfer(Transfer *t, CURLcode rc);
static void CollectFinished(void);
static uint32 SocketEvents(int what);
static int StopOnShutdown(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
						  curl_off_t ulnow);
static int WatchSocket(CURL *easy, curl_socket_t fd, int what, void *arg, void *socket_arg);
static int SetCurlTimer(CURLM *m, long timeout_ms, void *arg);
static void BuildWaitSet(void);
static bool WaitForTransfers(long timeout_ms);
static struct curl_slist *SmtpOptions(CURL *h, DeliveryJob *job, DeliveryOutcome *out,
									  UploadState *upload);
static struct curl_slist *HttpOptions(CURL *h, DeliveryJob *job, DeliveryOutcome *out);
static void Record(Transfer *t);
static bool RecordTogether(List *transfers);
static void RecordDone(void);
static void ForgetTransfer(Transfer *t);
static void QueueDailyRecap(void);
static void RunStatement(void *arg);
static double NextDue(bool *missing);
static void Release(List *transfers);
static void StopSending(void);
static uint32 HoldShutdown(void);
static void ResumeShutdown(uint32 held);
static void ForgetLatch(int code, Datum arg);
static void DeliveryStart(int slot);
static void TakeBack(void);
static void Expand(void);
static double Deliver(bool *missing);
static long DeliveryRound(bool *missing);
static char *PrintableText(const StringInfo s);
static bool SmtpTlsRequired(void);
static void NewMultiHandle(void);
static void EmptyPlaintextConnections(void);

PG_FUNCTION_INFO_V1(aimroute_delivery_worker_running);

/*
 * DeliveryWorkerInit defines the delivery worker's settings and, when the
 * library is being preloaded, registers the worker and its shared memory.
 */
void
DeliveryWorkerInit(void)
{
	DefineCustomIntVariable(
		"aimroute.delivery_naptime", "Longest sleep of the delivery worker between rounds.",
		"It also wakes when a message falls due and when a lead is queued.", &delivery_naptime, 10,
		1, 3600, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("aimroute.delivery_batch_size",
							"Messages the delivery worker claims at a time, at most.",
							"A claim also takes no more than the free transfer slots.",
							&delivery_batch_size, 50, 1, 10000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable(
		"aimroute.delivery_timeout", "Longest time one SMTP or HTTP send may take.",
		"A send that takes longer fails and is retried on the schedule.", &delivery_timeout, 30, 1,
		600, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable(
		"aimroute.delivery_lease", "How long a claimed message is the delivery worker's.",
		"A worker that stops between sending a message and recording the outcome leaves it claimed; the restarted worker takes it back at once and sends it again, with the same Message-ID.  The lease bounds only a claim nobody takes back.",
		&delivery_lease, 300, 1, 86400, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable(
		"aimroute.delivery_concurrency", "Messages the delivery worker sends at once, at most.",
		"Each is a transfer of its own; connections are kept open and used again.",
		&delivery_concurrency, 32, 1, 1000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable(
		"aimroute.delivery_endpoint_concurrency",
		"Messages the delivery worker sends at once to one endpoint, at most.",
		"An endpoint is an SMTP server or an HTTP host and port: one that is slow or never answers holds only these slots.",
		&delivery_endpoint_concurrency, 8, 1, 1000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable(
		"aimroute.tls_ca_file",
		"CA certificates (a PEM file) the delivery worker trusts for TLS; empty: the system's.",
		"For a mail server, CRM or push gateway whose certificate an internal CA signed.",
		&tls_ca_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	BounceMailboxInit();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = DeliveryShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = DeliveryShmemStartup;

	WorkerRegister("aimroute_delivery_worker_main", "aimroute delivery worker");
}

/*
 * DeliveryShmemRequest asks for the shared memory of the worker's latch.
 */
static void
DeliveryShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(DeliveryShared)));
}

/*
 * DeliveryShmemStartup creates or attaches to that shared memory.
 */
static void
DeliveryShmemStartup(void)
{
	bool found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	delivery_shared = ShmemInitStruct("aimroute delivery", sizeof(DeliveryShared), &found);
	if (!found)
		memset(delivery_shared, 0, sizeof(DeliveryShared));
	LWLockRelease(AddinShmemInitLock);
}

/*
 * DeliveryWakeWorkerAtCommit makes the current transaction wake the
 * delivery worker when it commits, so that what it queued goes out at
 * once rather than at the worker's next round.
 */
void
DeliveryWakeWorkerAtCommit(void)
{
	static bool registered = false;

	if (delivery_shared == NULL)
		return;
	if (!registered)
	{
		RegisterXactCallback(WakeAtCommit, NULL);
		registered = true;
	}
	wake_at_commit = true;
}

/*
 * WakeAtCommit sets the worker's latch when a transaction that queued
 * messages commits.
 */
static void
WakeAtCommit(XactEvent event, void *arg)
{
	Latch *latch;

	if (!wake_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		for (int i = 0; i < AIMROUTE_MAX_DATABASES; i++)
		{
			latch = delivery_shared->workers[i].latch;
			if (latch != NULL && delivery_shared->workers[i].database == MyDatabaseId)
				SetLatch(latch);
		}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_at_commit = false;
}

/*
 * ForgetLatch unpublishes the worker's latch when the worker exits.
 */
static void
ForgetLatch(int code, Datum arg)
{
	delivery_shared->workers[DatumGetInt32(arg)].latch = NULL;
}

/*
 * CopyColumn copies a text column of an SPI row into context (NULL stays
 * NULL).
 */
static char *
CopyColumn(HeapTuple row, TupleDesc desc, int column, MemoryContext context)
{
	char *value = SPI_getvalue(row, desc, column);

	return value == NULL ? NULL : MemoryContextStrdup(context, value);
}

/*
 * ClaimBatch claims up to max_messages due messages, skipping those of the
 * endpoints whose slots are all taken, and queues them as Transfers waiting
 * for a slot; the claim is committed when it returns.  Returns how many
 * rows the claim returned.  The messages the worker holds are not claimed
 * again, even when their lease ran out while they were being sent (a lease
 * shorter than aimroute.delivery_timeout).
 */
static int
ClaimBatch(int max_messages)
{
	static const char *const sql =
		"SELECT message_id, attempt, transport, url, mail_from, recipient, username, password,"
		" content_type, message_key, payload"
		" FROM aimroute.delivery_claim($1, make_interval(secs => $2), $3, $4)";
	/* A database not updated to 0.2.0 has the claim without endpoints. */
	static const char *const old_sql =
		"SELECT message_id, attempt, transport, url, mail_from, recipient, username, password,"
		" content_type, message_key, payload"
		" FROM aimroute.delivery_claim($1, make_interval(secs => $2))";
	Oid types[4] = { INT4OID, FLOAT8OID, TEXTARRAYOID, INT8ARRAYOID };
	Datum args[4];
	bool with_endpoints;
	uint64 claimed;

	if (!WorkerBeginTransaction("aimroute: claiming due messages"))
	{
		WorkerCommitTransaction();
		return 0;
	}
	with_endpoints = WorkerHasFunction("delivery_endpoint");
	smtp_tls_required = SmtpTlsRequired();
	args[0] = Int32GetDatum(max_messages);
	args[1] = Float8GetDatum((double) delivery_lease);
	args[2] = FullEndpoints();
	args[3] = HeldMessages();
	if (SPI_execute_with_args(with_endpoints ? sql : old_sql, with_endpoints ? 4 : 2, types, args,
							  NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "delivery worker: could not claim messages");
	claimed = SPI_processed;
	for (uint64 i = 0; i < claimed; i++)
	{
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		MemoryContext context = AllocSetContextCreate(worker_context, "aimroute delivery transfer",
													  ALLOCSET_SMALL_SIZES);
		Transfer *t = MemoryContextAllocZero(context, sizeof(Transfer));
		DeliveryJob *job = &t->job;
		char *transport = SPI_getvalue(row, desc, 3);
		MemoryContext old;
		bool isnull;

		t->context = context;
		job->message_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		job->attempt = DatumGetInt32(SPI_getbinval(row, desc, 2, &isnull));
		job->smtp = transport != NULL && strcmp(transport, "smtp") == 0;
		job->url = CopyColumn(row, desc, 4, context);
		job->mail_from = CopyColumn(row, desc, 5, context);
		job->recipient = CopyColumn(row, desc, 6, context);
		job->username = CopyColumn(row, desc, 7, context);
		job->password = CopyColumn(row, desc, 8, context);
		job->content_type = CopyColumn(row, desc, 9, context);
		job->message_key = CopyColumn(row, desc, 10, context);
		/* What goes on the wire is UTF-8, whatever the database encoding. */
		job->payload = CopyColumn(row, desc, 11, context);
		if (job->payload != NULL)
			job->payload = MemoryContextStrdup(
				context, pg_server_to_any(job->payload, strlen(job->payload), PG_UTF8));
		if (job->url == NULL || job->payload == NULL)
			elog(ERROR, "delivery worker: message " INT64_FORMAT " has no address or content",
				 job->message_id);
		t->endpoint = EndpointOf(job->url);
		t->endpoint->waiting++;
		old = MemoryContextSwitchTo(worker_context);
		waiting = lappend(waiting, t);
		MemoryContextSwitchTo(old);
	}
	WorkerCommitTransaction();
	return (int) claimed;
}

/*
 * EndpointKey writes an URL's endpoint into key: its scheme and authority
 * (up to the first "/", "?" or "#" after "://"), in lower case; "" when it
 * has none.  aimroute.delivery_endpoint computes the same in SQL.
 */
static void
EndpointKey(const char *url, char *key)
{
	const char *p = url;
	size_t n;

	while (*p != '\0' && strchr(":/?#", *p) == NULL)
		p++;
	if (p == url || strncmp(p, "://", 3) != 0)
	{
		key[0] = '\0';
		return;
	}
	p += 3;
	while (*p != '\0' && strchr("/?#", *p) == NULL)
		p++;
	n = Min((size_t) (p - url), (size_t) ENDPOINT_KEY_MAX - 1);
	for (size_t i = 0; i < n; i++)
		key[i] = pg_ascii_tolower((unsigned char) url[i]);
	key[n] = '\0';
}

/*
 * EndpointOf returns the endpoint of an URL, entered in the worker's table
 * of endpoints when it is new.
 */
static Endpoint *
EndpointOf(const char *url)
{
	char key[ENDPOINT_KEY_MAX];
	Endpoint *e;
	bool found;

	memset(key, 0, sizeof(key));
	EndpointKey(url, key);
	e = hash_search(endpoints, key, HASH_ENTER, &found);
	if (!found)
	{
		e->running = 0;
		e->waiting = 0;
	}
	return e;
}

/*
 * FullEndpoints returns, as a text[] Datum, the endpoints whose slots are
 * all taken or that have messages waiting already: the claim skips their
 * messages, which stay queued and take no slot of another endpoint.
 */
static Datum
FullEndpoints(void)
{
	HASH_SEQ_STATUS scan;
	Endpoint *e;
	Datum *keys = palloc(sizeof(Datum) * Max(1, hash_get_num_entries(endpoints)));
	int n = 0;

	hash_seq_init(&scan, endpoints);
	while ((e = hash_seq_search(&scan)) != NULL)
		if (e->running + e->waiting >= delivery_endpoint_concurrency)
			keys[n++] = CStringGetTextDatum(e->key);
	return PointerGetDatum(construct_array(keys, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * HeldMessages returns, as a bigint[] Datum, the messages the worker holds:
 * being sent, waiting for a slot, or sent and waiting to be recorded.
 */
static Datum
HeldMessages(void)
{
	List *lists[3] = { running, waiting, done };
	Datum *ids = palloc(sizeof(Datum) *
						Max(1, list_length(running) + list_length(waiting) + list_length(done)));
	int n = 0;
	ListCell *lc;

	for (size_t i = 0; i < lengthof(lists); i++)
		foreach (lc, lists[i])
			ids[n++] = Int64GetDatum(((Transfer *) lfirst(lc))->job.message_id);
	return PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * StartWaiting starts the waiting transfers that have a free slot, oldest
 * first: one of aimroute.delivery_concurrency in all, and one of
 * aimroute.delivery_endpoint_concurrency at their endpoint.
 */
static void
StartWaiting(void)
{
	ListCell *lc;

	foreach (lc, waiting)
	{
		Transfer *t = (Transfer *) lfirst(lc);

		if (list_length(running) >= delivery_concurrency)
			break;
		if (t->endpoint->running >= delivery_endpoint_concurrency)
			continue;
		waiting = foreach_delete_current(waiting, lc);
		t->endpoint->waiting--;
		StartTransfer(t);
	}
}

/*
 * StartTransfer sets up an easy handle for one message and adds it to the
 * multi handle: the transfer runs from the next call of libcurl on.
 */
static void
StartTransfer(Transfer *t)
{
	MemoryContext old = MemoryContextSwitchTo(t->context);
	CURL *h;
	CURLMcode rc;

	if (idle_handles != NIL)
	{
		h = (CURL *) linitial(idle_handles);
		idle_handles = list_delete_first(idle_handles);
	}
	else if ((h = curl_easy_init()) == NULL)
		elog(ERROR, "delivery worker: could not create a libcurl handle");
	t->easy = h;
	t->error[0] = '\0';
	memset(&t->out, 0, sizeof(t->out));
	initStringInfo(&t->out.response);
	curl_easy_setopt(h, CURLOPT_URL, t->job.url);
	curl_easy_setopt(h, CURLOPT_PRIVATE, t);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->error);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long) delivery_timeout);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long) Min(delivery_timeout, 10));
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, StopOnShutdown);
	if (tls_ca_file != NULL && tls_ca_file[0] != '\0')
		curl_easy_setopt(h, CURLOPT_CAINFO, tls_ca_file);
	t->list = t->job.smtp ? SmtpOptions(h, &t->job, &t->out, &t->upload)
						  : HttpOptions(h, &t->job, &t->out);
	MemoryContextSwitchTo(old);

	rc = curl_multi_add_handle(multi, h);
	if (rc != CURLM_OK)
		elog(ERROR, "delivery worker: could not start a transfer: %s", curl_multi_strerror(rc));
	t->endpoint->running++;
	old = MemoryContextSwitchTo(worker_context);
	running = lappend(running, t);
	MemoryContextSwitchTo(old);
}

/*
 * FinishTransfer takes an ended transfer out of the multi handle, notes
 * what came of it, and queues it to be recorded.  Nothing here may raise an
 * error: the outcome, whatever it is, must be recorded.
 */
static void
FinishTransfer(Transfer *t, CURLcode rc)
{
	MemoryContext old = MemoryContextSwitchTo(t->context);

	t->out.curl_code = (int) rc;
	t->out.response_code = 0;
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->out.response_code);
	if (rc == CURLE_USE_SSL_FAILED)
	{
		/* What the server said last is its EHLO's 250: not the point. */
		t->out.response_code = 0;
		resetStringInfo(&t->out.response);
		appendStringInfoString(
			&t->out.response,
			"the server does not offer STARTTLS and settings.smtp_tls is 'required': nothing was sent (no login, no message)");
	}
	else if (rc != CURLE_OK)
	{
		if (t->out.response.len > 0)
			appendStringInfoString(&t->out.response, "; ");
		appendStringInfoString(&t->out.response,
							   t->error[0] != '\0' ? t->error : curl_easy_strerror(rc));
	}
	else if (!t->job.smtp)
		appendStringInfo(&t->out.response, "%sHTTP %ld", t->out.response.len > 0 ? "; " : "",
						 t->out.response_code);
	MemoryContextSwitchTo(old);
	ForgetTransfer(t);
	old = MemoryContextSwitchTo(worker_context);
	/* A send cut short by a shutdown is given back, not judged. */
	if (rc == CURLE_ABORTED_BY_CALLBACK && ProcDiePending)
		cut_short = lappend(cut_short, t);
	else
		done = lappend(done, t);
	MemoryContextSwitchTo(old);
}

/*
 * ForgetTransfer takes a transfer out of the multi handle (which ends it,
 * when it still runs) and out of the running list, and keeps its easy
 * handle, reset, for another message; the connection stays in the multi
 * handle's cache.
 */
static void
ForgetTransfer(Transfer *t)
{
	MemoryContext old;

	curl_multi_remove_handle(multi, t->easy);
	/* Options must not point to freed memory once the handle is reused. */
	curl_easy_reset(t->easy);
	curl_slist_free_all(t->list);
	t->list = NULL;
	old = MemoryContextSwitchTo(worker_context);
	idle_handles = lappend(idle_handles, t->easy);
	MemoryContextSwitchTo(old);
	t->easy = NULL;
	t->endpoint->running--;
	if (t->endpoint->running + t->endpoint->waiting < delivery_endpoint_concurrency)
		room_freed = true;
	running = list_delete_ptr(running, t);
}

/*
 * CollectFinished moves the transfers libcurl reports ended to the done
 * list.
 */
static void
CollectFinished(void)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		Transfer *t = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		FinishTransfer(t, msg->data.result);
	}
}

/*
 * SocketEvents is what to wait for on a socket that libcurl watches for
 * what.
 */
static uint32
SocketEvents(int what)
{
	if (what == CURL_POLL_OUT)
		return WL_SOCKET_WRITEABLE;
	if (what == CURL_POLL_INOUT)
		return WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE;
	return WL_SOCKET_READABLE;
}

/*
 * WatchSocket is libcurl's socket callback: it keeps the list of sockets
 * the worker waits on, and for what.  A socket added or removed makes the
 * wait set be built again before the next wait; one that only changes
 * what it waits for is changed in place.
 */
static int
WatchSocket(CURL *easy, curl_socket_t fd, int what, void *arg, void *socket_arg)
{
	int i;

	for (i = 0; i < nsockets && sockets[i].fd != fd; i++)
		;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsockets)
		{
			sockets[i] = sockets[--nsockets];
			wait_set_stale = true;
		}
		return 0;
	}
	if (i == nsockets)
	{
		if (nsockets == max_sockets)
		{
			max_sockets = Max(16, max_sockets * 2);
			sockets = sockets == NULL
						  ? MemoryContextAlloc(worker_context, sizeof(WatchedSocket) * max_sockets)
						  : repalloc(sockets, sizeof(WatchedSocket) * max_sockets);
		}
		nsockets++;
		sockets[i].fd = fd;
		sockets[i].position = -1;
		wait_set_stale = true;
	}
	else if (sockets[i].what != what && !wait_set_stale && sockets[i].position >= 0)
		ModifyWaitEvent(wait_set, sockets[i].position, SocketEvents(what), NULL);
	sockets[i].what = what;
	return 0;
}

/*
 * SetCurlTimer is libcurl's timer callback: when it next wants
 * curl_multi_socket_action(CURL_SOCKET_TIMEOUT).
 */
static int
SetCurlTimer(CURLM *m, long timeout_ms, void *arg)
{
	curl_deadline =
		timeout_ms < 0 ? -1 : TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/*
 * BuildWaitSet builds the set of events the worker waits on: its latch,
 * the postmaster's death, and the sockets of the transfers.
 */
static void
BuildWaitSet(void)
{
	if (wait_set != NULL)
		FreeWaitEventSet(wait_set);
	wait_set = CreateWaitEventSet(worker_context, nsockets + 2);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsockets; i++)
		sockets[i].position =
			AddWaitEventToSet(wait_set, SocketEvents(sockets[i].what), sockets[i].fd, NULL, NULL);
	wait_set_stale = false;
}

/*
 * WaitForTransfers waits, timeout_ms at most, until the latch is set, a
 * transfer's socket is ready or libcurl's timer runs out, lets libcurl do
 * what can be done, and moves the transfers that ended to the done list.
 * Returns whether the latch was set (new messages, a signal).
 */
static bool
WaitForTransfers(long timeout_ms)
{
	WaitEvent events[64];
	bool latch_set = false;
	int still;
	int n;

	if (curl_deadline >= 0)
	{
		long secs;
		int usecs;

		TimestampDifference(GetCurrentTimestamp(), curl_deadline, &secs, &usecs);
		timeout_ms = Min(timeout_ms, secs * 1000L + (usecs + 999) / 1000);
	}
	if (wait_set == NULL || wait_set_stale)
		BuildWaitSet();
	n = WaitEventSetWait(wait_set, Max(0, timeout_ms), events, lengthof(events), PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		int mask = 0;

		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch_set = true;
			continue;
		}
		if (events[i].events & WL_SOCKET_READABLE)
			mask |= CURL_CSELECT_IN;
		if (events[i].events & WL_SOCKET_WRITEABLE)
			mask |= CURL_CSELECT_OUT;
		if (mask != 0)
			curl_multi_socket_action(multi, events[i].fd, mask, &still);
	}
	if (curl_deadline >= 0 && GetCurrentTimestamp() >= curl_deadline)
	{
		curl_deadline = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still);
	}
	CollectFinished();
	return latch_set;
}
/*
 * ReadUpload is libcurl's read callback for an SMTP message body.
 */
static size_t
ReadUpload(char *buffer, size_t size, size_t nitems, void *arg)
{
	UploadState *upload = (UploadState *) arg;
	size_t n = Min(size * nitems, upload->left);

	memcpy(buffer, upload->data, n);
	upload->data += n;
	upload->left -= n;
	return n;
}

/*
 * KeepReply is libcurl's debug callback: it keeps the server's last reply
 * (SMTP) so that the attempt can show it.
 */
static int
KeepReply(CURL *h, curl_infotype type, char *data, size_t size, void *arg)
{
	DeliveryOutcome *out = (DeliveryOutcome *) arg;

	if (type == CURLINFO_HEADER_OUT)
	{
		/*
		 * Only the verbs: what follows AUTH is the encoded login, which must
		 * not end up in the attempt log.
		 */
		static const char *const verbs[] = { "EHLO", "HELO", "STARTTLS", "AUTH",
											 "MAIL", "RCPT", "DATA",	 "RSET" };

		for (size_t i = 0; i < lengthof(verbs); i++)
			if (size >= strlen(verbs[i]) && strncmp(data, verbs[i], strlen(verbs[i])) == 0)
				strlcpy(out->command, verbs[i], sizeof(out->command));
		return 0;
	}
	/* Not the reply to QUIT, which libcurl sends after a refusal. */
	if (type != CURLINFO_HEADER_IN || (size >= 4 && strncmp(data, "221 ", 4) == 0))
		return 0;
	while (size > 0 && (data[size - 1] == '\n' || data[size - 1] == '\r'))
		size--;
	resetStringInfo(&out->response);
	appendBinaryStringInfo(&out->response, data, (int) Min(size, RESPONSE_MAX));
	return 0;
}

/*
 * KeepBody is libcurl's write callback for an HTTP answer: it keeps its
 * first RESPONSE_MAX bytes.
 */
static size_t
KeepBody(char *data, size_t size, size_t nitems, void *arg)
{
	DeliveryOutcome *out = (DeliveryOutcome *) arg;
	size_t n = size * nitems;

	if (out->response.len < RESPONSE_MAX)
		appendBinaryStringInfo(&out->response, data,
							   (int) Min(n, (size_t) (RESPONSE_MAX - out->response.len)));
	return n;
}

/*
 * StopOnShutdown is libcurl's progress callback: it ends a transfer when
 * the worker is asked to stop.  libcurl waits for an SMTP server's reply to
 * the end of a message without returning to the worker, calling this every
 * second meanwhile: a shutdown is not held up by that wait.
 */
static int
StopOnShutdown(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			   curl_off_t ulnow)
{
	return ProcDiePending ? 1 : 0;
}

/*
 * SmtpOptions sets what an SMTP send needs on h: the login, STARTTLS, one
 * recipient, the message to upload, and the server's replies kept in out.
 * Returns the recipient list, which the caller frees after the send.
 */
static struct curl_slist *
SmtpOptions(CURL *h, DeliveryJob *job, DeliveryOutcome *out, UploadState *upload)
{
	struct curl_slist *list;

	/* The login is the SMTP server's, never sent to an HTTP endpoint. */
	if (job->username != NULL)
		curl_easy_setopt(h, CURLOPT_USERNAME, job->username);
	if (job->password != NULL)
		curl_easy_setopt(h, CURLOPT_PASSWORD, job->password);
	/*
	 * smtps:// is TLS throughout.  With smtp://, STARTTLS when the server
	 * offers it; settings.smtp_tls = 'required': STARTTLS or nothing.  libcurl
	 * would reuse a connection opened in plaintext under 'try' for a transfer
	 * that requires TLS, so none is reused until the cache is emptied.
	 */
	if (smtp_tls_required)
	{
		curl_easy_setopt(h, CURLOPT_USE_SSL, (long) CURLUSESSL_ALL);
		if (plaintext_cached)
			curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
	}
	else
	{
		curl_easy_setopt(h, CURLOPT_USE_SSL, (long) CURLUSESSL_TRY);
		plaintext_cached = true;
	}
	list = curl_slist_append(NULL, psprintf("<%s>", job->recipient != NULL ? job->recipient : ""));
	upload->data = job->payload;
	upload->left = strlen(job->payload);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(h, CURLOPT_MAIL_FROM, psprintf("<%s>", job->mail_from));
	curl_easy_setopt(h, CURLOPT_MAIL_RCPT, list);
	curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, ReadUpload);
	curl_easy_setopt(h, CURLOPT_READDATA, upload);
	curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
	curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, KeepReply);
	curl_easy_setopt(h, CURLOPT_DEBUGDATA, out);
	return list;
}

/*
 * HttpOptions sets what an HTTP POST needs on h: the Idempotency-Key and
 * Content-Type headers, the body, and the response body kept in out.
 * Returns the header list, which the caller frees after the send.
 */
static struct curl_slist *
HttpOptions(CURL *h, DeliveryJob *job, DeliveryOutcome *out)
{
	struct curl_slist *list;

	list = curl_slist_append(NULL, psprintf("Idempotency-Key: %s", job->message_key));
	list = curl_slist_append(
		list,
		psprintf("Content-Type: %s", job->content_type != NULL ? job->content_type : "text/plain"));
	list = curl_slist_append(list, "Expect:");
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "aimroute/" AIMROUTE_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, job->payload);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(job->payload));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, KeepBody);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	return list;
}

/*
 * PrintableText is a server's reply as one line of printable ASCII: it
 * comes from the network, so no byte of it is trusted to be valid text.
 */
static char *
PrintableText(const StringInfo s)
{
	char *text = palloc(s->len + 1);
	int n = 0;

	for (int i = 0; i < s->len; i++)
	{
		unsigned char c = (unsigned char) s->data[i];

		if (c == '\r' || c == '\n' || c == '\t')
			c = ' ';
		else if (c < 0x20 || c > 0x7e)
			c = '?';
		text[n++] = (char) c;
	}
	while (n > 0 && text[n - 1] == ' ')
		n--;
	text[n] = '\0';
	return text;
}

/*
 * HoldShutdown holds off a shutdown (and any other interrupt) until
 * ResumeShutdown, and returns what ResumeShutdown needs.
 *
 * Not HOLD_INTERRUPTS and RESUME_INTERRUPTS alone: an ERROR zeroes the
 * hold-off count when it is thrown, even one that a PL/pgSQL exception
 * block then catches (in a trigger the owner put on the outbox, say).
 * RESUME_INTERRUPTS would then take the count below zero --
 * it is unsigned, so interrupts would stay held for good, and the worker
 * would ignore every SIGTERM after.  ResumeShutdown puts the count back
 * instead.  After such a caught error, the rest of the section is no longer
 * held off: a shutdown there is as a crash, after which the message is
 * sent again with the same key.
 */
static uint32
HoldShutdown(void)
{
	uint32 held = InterruptHoldoffCount;

	HOLD_INTERRUPTS();
	return held;
}

/*
 * ResumeShutdown ends the hold-off HoldShutdown began.
 */
static void
ResumeShutdown(uint32 held)
{
	InterruptHoldoffCount = held;
}

/*
 * Record records the outcome of one send in a transaction of its own.
 */
static void
Record(Transfer *t)
{
	static const char *const sql = "SELECT aimroute.delivery_record($1, $2, $3, $4, $5, $6)";
	Oid types[6] = { INT8OID, INT4OID, INT4OID, INT4OID, TEXTOID, TEXTOID };
	Datum args[6];
	char nulls[6] = "      ";
	char *text;
	uint32 held;

	text = PrintableText(&t->out.response);
	/*
	 * The message went out: a shutdown must not come between the send and
	 * its record, or the message would be sent again.
	 */
	held = HoldShutdown();
	if (!WorkerBeginTransaction("aimroute: recording a delivery"))
	{
		/* Dropped meanwhile: there is nothing left to record it in. */
		WorkerCommitTransaction();
		ResumeShutdown(held);
		return;
	}
	args[0] = Int64GetDatum(t->job.message_id);
	args[1] = Int32GetDatum(t->job.attempt);
	args[2] = Int32GetDatum(t->out.curl_code);
	args[3] = Int32GetDatum((int32) t->out.response_code);
	args[4] = CStringGetTextDatum(text);
	/* GREETING: the server refused before any command (no bounce). */
	args[5] = CStringGetTextDatum(t->out.command[0] != '\0' ? t->out.command : "GREETING");
	if (!t->job.smtp)
		nulls[5] = 'n';
	if (SPI_execute_with_args(sql, 6, types, args, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "delivery worker: could not record the outcome of message " INT64_FORMAT,
			 t->job.message_id);
	WorkerCommitTransaction();
	ResumeShutdown(held);
}

/*
 * RecordTogether records the outcomes of several sends in one statement of
 * one transaction (its caller's), in a subtransaction:
 * aimroute.delivery_record_batch records the deliveries set-based and the
 * other outcomes one by one.  When that raises -- delivery_record sets
 * aside a message whose own record fails, so this is a lock or the server,
 * not a message -- it is rolled back, logged, and false is returned, and
 * the caller records each outcome on its own, as the worker did before
 * outcomes were recorded together.
 */
static bool
RecordTogether(List *transfers)
{
	static const char *const sql = "SELECT aimroute.delivery_record_batch($1, $2, $3, $4, $5, $6)";
	/* A database not updated to 0.2.0 has no delivery_record_batch. */
	static const char *const old_sql =
		"SELECT aimroute.delivery_record(r.message_id, r.attempt, r.curl_code, r.response_code,"
		" r.response, r.smtp_command)"
		" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
		" pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6))"
		" AS r (message_id, attempt, curl_code, response_code, response, smtp_command)";
	Oid types[6] = { INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID,
					 INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID };
	int n = list_length(transfers);
	Datum *ids = palloc(sizeof(Datum) * n);
	Datum *attempts = palloc(sizeof(Datum) * n);
	Datum *codes = palloc(sizeof(Datum) * n);
	Datum *replies = palloc(sizeof(Datum) * n);
	Datum *texts = palloc(sizeof(Datum) * n);
	Datum *commands = palloc(sizeof(Datum) * n);
	bool *no_command = palloc(sizeof(bool) * n);
	Datum args[6];
	int dims[1] = { n };
	int lbs[1] = { 1 };
	Statement statement;
	ErrorData *error;
	int i = 0;
	ListCell *lc;

	foreach (lc, transfers)
	{
		Transfer *t = (Transfer *) lfirst(lc);

		ids[i] = Int64GetDatum(t->job.message_id);
		attempts[i] = Int32GetDatum(t->job.attempt);
		codes[i] = Int32GetDatum(t->out.curl_code);
		replies[i] = Int32GetDatum((int32) t->out.response_code);
		texts[i] = CStringGetTextDatum(PrintableText(&t->out.response));
		/* GREETING: the server refused before any command (no bounce). */
		commands[i] = CStringGetTextDatum(t->out.command[0] != '\0' ? t->out.command : "GREETING");
		no_command[i] = !t->job.smtp;
		i++;
	}
	args[0] =
		PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(attempts, n, INT4OID, 4, true, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_array(codes, n, INT4OID, 4, true, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(replies, n, INT4OID, 4, true, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_array(texts, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[5] = PointerGetDatum(
		construct_md_array(commands, no_command, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));

	statement.sql = WorkerHasFunction("delivery_record_batch") ? sql : old_sql;
	statement.nargs = 6;
	statement.types = types;
	statement.args = args;
	error = TrySubtransaction(RunStatement, &statement);
	if (error == NULL)
		return true;
	ereport(LOG, (errmsg("aimroute delivery worker: recording %d outcomes together failed: %s", n,
						 error->message),
				  errdetail("They are recorded one by one instead.")));
	FreeErrorData(error);
	return false;
}

/*
 * RecordDone records the outcomes of the transfers that ended, several in
 * one transaction, and frees them.
 */
static void
RecordDone(void)
{
	List *transfers = done;
	ListCell *lc;
	bool recorded = false;

	if (transfers == NIL)
		return;
	done = NIL;
	pgstat_report_activity(STATE_RUNNING, "aimroute: recording deliveries");
	if (list_length(transfers) > 1)
	{
		/* As in Record: no shutdown between the sends and their record. */
		uint32 held = HoldShutdown();

		if (!WorkerBeginTransaction("aimroute: recording deliveries"))
			recorded = true; /* dropped meanwhile: nothing to record them in */
		else
			recorded = RecordTogether(transfers);
		WorkerCommitTransaction();
		ResumeShutdown(held);
	}
	foreach (lc, transfers)
	{
		Transfer *t = (Transfer *) lfirst(lc);

		if (!recorded)
			Record(t);
		MemoryContextDelete(t->context);
	}
	list_free(transfers);
}

/*
 * Release gives back claimed messages not sent (aimroute.delivery_give_back)
 * when the worker is asked to stop: they are due again at once, rather than
 * when their lease runs out, and frees them.  A database not updated to this
 * version yet has no such function: there they wait for the next worker to
 * take them back, or for their lease.
 */
static void
Release(List *transfers)
{
	static const char *const sql = "SELECT aimroute.delivery_give_back($1, $2)";
	Oid types[2] = { INT8OID, INT4OID };
	uint32 held = HoldShutdown();
	bool give_back = WorkerBeginTransaction("aimroute: giving back unsent messages") &&
					 WorkerHasFunction("delivery_give_back");
	ListCell *lc;

	foreach (lc, transfers)
	{
		Transfer *t = (Transfer *) lfirst(lc);
		Datum args[2] = { Int64GetDatum(t->job.message_id), Int32GetDatum(t->job.attempt) };

		if (give_back &&
			SPI_execute_with_args(sql, 2, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "delivery worker: could not give back message " INT64_FORMAT,
				 t->job.message_id);
	}
	WorkerCommitTransaction();
	ResumeShutdown(held);
	foreach (lc, transfers)
		MemoryContextDelete(((Transfer *) lfirst(lc))->context);
}

/*
 * StopSending is the worker's answer to a shutdown: the outcomes of the
 * transfers that ended are recorded, the transfers still running are cut
 * short, and what they carried is given back with what waited for a slot
 * (a message cut short may have reached its server: it goes again with
 * the same key); then the worker exits.
 */
static void
StopSending(void)
{
	List *unsent = NIL;

	RecordDone();
	while (running != NIL)
	{
		Transfer *t = (Transfer *) linitial(running);

		ForgetTransfer(t);
		unsent = lappend(unsent, t);
	}
	unsent = list_concat(unsent, cut_short);
	unsent = list_concat(unsent, waiting);
	cut_short = NIL;
	waiting = NIL;
	Release(unsent);
	CHECK_FOR_INTERRUPTS();
}

/*
 * QueueDailyRecap queues the daily recap when its hour has come, in a
 * subtransaction of the round's transaction, as PL/pgSQL does for an
 * exception block.  When it raises, the error becomes a WARNING and the
 * worker goes on sending (SPEC section 8: nothing stalls on one bad item);
 * the recap is tried again 1, 2, 4 ... minutes later, every hour at most.
 */
static void
QueueDailyRecap(void)
{
	static const Statement statement = { "SELECT aimroute.queue_daily_recap()", 0, NULL, NULL };
	ErrorData *error;
	int minutes;

	if (GetCurrentTimestamp() < recap_retry_at)
		return;
	error = TrySubtransaction(RunStatement, (void *) &statement);
	if (error == NULL)
	{
		recap_failures = 0;
		return;
	}
	recap_failures++;
	minutes = Min(60, 1 << Min(recap_failures - 1, 6));
	recap_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), minutes * 60000L);
	ereport(
		WARNING,
		(errmsg("aimroute: the daily recap was not queued: %s", error->message),
		 errdetail(
			 "Failure %d in a row (SQLSTATE %s); next try at %s.  The delivery worker sends the other messages meanwhile.%s%s",
			 recap_failures, unpack_sql_state(error->sqlerrcode),
			 timestamptz_to_str(recap_retry_at),
			 error->detail != NULL ? " The error's detail: " : "",
			 error->detail != NULL ? error->detail : ""),
		 error->context != NULL ? errcontext("%s", error->context) : 0));
	FreeErrorData(error);
}

/*
 * RunStatement runs one statement of the worker (a Statement) and raises
 * when it fails.
 */
static void
RunStatement(void *arg)
{
	const Statement *statement = (const Statement *) arg;

	if (SPI_execute_with_args(statement->sql, statement->nargs, statement->types, statement->args,
							  NULL, false, 0) < 0)
		elog(ERROR, "delivery worker: could not run \"%s\"", statement->sql);
}

/*
 * NextDue runs the round's SQL around the sends: the daily recap, and the
 * seconds until the next message falls due (-1: none).  *missing tells
 * whether the extension is not installed.
 */
static double
NextDue(bool *missing)
{
	double next = -1;

	*missing = !WorkerBeginTransaction("aimroute: looking for due messages");
	if (!*missing)
	{
		QueueDailyRecap();
		next = WorkerFloat("SELECT aimroute.delivery_next_due()", true);
	}
	WorkerCommitTransaction();
	return next;
}

/*
 * DeliveryStart readies the worker once it is connected: libcurl's multi
 * handle, the worker's memory, and its latch published in the database's
 * slot, so that a commit that queued messages wakes it.
 */
static void
DeliveryStart(int slot)
{
	HASHCTL control;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "delivery worker: could not initialize libcurl");
	NewMultiHandle();
	worker_context =
		AllocSetContextCreate(TopMemoryContext, "aimroute delivery", ALLOCSET_DEFAULT_SIZES);
	memset(&control, 0, sizeof(control));
	control.keysize = ENDPOINT_KEY_MAX;
	control.entrysize = sizeof(Endpoint);
	control.hcxt = worker_context;
	endpoints = hash_create("aimroute delivery endpoints", 64, &control,
							HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	delivery_shared->workers[slot].database = MyDatabaseId;
	delivery_shared->workers[slot].latch = MyLatch;
	before_shmem_exit(ForgetLatch, Int32GetDatum(slot));
	TakeBack();
}

/*
 * TakeBack makes due at once what an earlier worker of this database
 * claimed and did not record (aimroute.delivery_take_back), so that a
 * restart after a crash resends it now rather than when its lease runs out
 * (SPEC section 7).
 */
static void
TakeBack(void)
{
	double taken = 0;

	if (WorkerBeginTransaction("aimroute: taking back unrecorded messages") &&
		WorkerHasFunction("delivery_take_back"))
		taken = WorkerFloat("SELECT aimroute.delivery_take_back()::pg_catalog.float8", false);
	WorkerCommitTransaction();
	if (taken > 0)
		ereport(
			LOG,
			(errmsg(
				 "aimroute delivery worker: took back %.0f messages claimed by a worker that stopped before recording them",
				 taken),
			 errdetail(
				 "They are sent again now, with the same Message-ID or Idempotency-Key, instead of when their lease runs out.")));
}

/*
 * Expand queues the notices and messages of the leads routing marked to be
 * sent (aimroute.delivery_expand), EXPAND_BATCH leads a transaction, until
 * none is left, so that the claim that follows finds their messages.  A
 * database not updated to this version yet has no marks: its routing
 * queues as 0.1.0 did.
 */
static void
Expand(void)
{
	char sql[100];
	double taken;

	snprintf(sql, sizeof(sql), "SELECT aimroute.delivery_expand(%d)::pg_catalog.float8",
			 EXPAND_BATCH);
	do
	{
		taken = 0;
		if (WorkerBeginTransaction("aimroute: queueing the messages of new leads") &&
			WorkerHasFunction("delivery_expand"))
			taken = WorkerFloat(sql, false);
		WorkerCommitTransaction();
	} while (taken >= EXPAND_BATCH && !ProcDiePending);
}

/*
 * Deliver sends due messages until none is due and no transfer runs: it
 * claims as many as there are free transfer slots (those beyond their
 * endpoint's slots wait in the worker for one of them, not for the
 * others), starts them, and waits on
 * the latch and the transfers' sockets.  A transfer that ends frees a slot
 * of its endpoint, which the next claim fills, so that a message never
 * waits for another to an endpoint that hangs.  The outcomes are recorded
 * together: RECORD_BATCH of them, or what ended RECORD_DELAY_MS after the
 * first, or all when nothing else runs.  Returns the seconds until the next
 * message falls due (-1: none), as NextDue.
 */
static double
Deliver(bool *missing)
{
	bool claim = true;
	bool expand = false; /* the round expanded just before */
	double next = 0;
	TimestampTz look_again = 0;
	TimestampTz quiet_until = 0;
	TimestampTz record_by = 0;

	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) delivery_concurrency + 16);
	for (;;)
	{
		TimestampTz now;
		TimestampTz wake_at;

		if (ProcDiePending)
			StopSending();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) delivery_concurrency + 16);
		}
		now = GetCurrentTimestamp();
		if (done != NIL)
		{
			if (record_by == 0)
				record_by = TimestampTzPlusMilliseconds(now, RECORD_DELAY_MS);
			if (list_length(done) >= RECORD_BATCH || running == NIL || now >= record_by)
			{
				RecordDone();
				record_by = 0;
			}
		}
		/*
		 * Leads committed since the last look woke the latch: their
		 * messages are made now, whether or not a slot is free, so that
		 * they exist (and show) while the transfers run.
		 */
		if (expand)
		{
			Expand();
			expand = false;
		}
		if (!claim && now >= look_again)
			claim = true;
		if (claim && list_length(running) < delivery_concurrency)
		{
			int wanted = Min(delivery_batch_size, delivery_concurrency - list_length(running));
			int claimed = ClaimBatch(wanted);

			if (claimed < wanted)
			{
				/*
				 * All claimed that could be: look again when the next
				 * message falls due, when a slot frees or the latch is set.
				 * Still due right after the claim: a row another
				 * transaction holds (SKIP LOCKED), or one of a full
				 * endpoint; look again in a second, not at once.
				 */
				claim = false;
				next = NextDue(missing);
				if (*missing)
					break;
				look_again = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 next < 0	 ? delivery_naptime * 1000L
														 : next == 0 ? 1000L
																	 : (long) (next * 1000) + 1);
				/*
				 * Nothing claimed though messages are due: they are all of
				 * full endpoints (or locked), and finding that out went
				 * through them all.  New messages (the latch) do not make
				 * the worker go through them again before the next look; a
				 * slot that frees does.
				 */
				if (claimed == 0 && next == 0)
					quiet_until = look_again;
			}
			StartWaiting();
			if (claim && waiting != NIL)
			{
				/*
				 * A message claimed waits for a slot of its endpoint, whose
				 * messages are probably the next due: claim again when a
				 * slot frees or the latch is set (a second at the latest),
				 * not at once, or the claim would go through them for
				 * nothing.
				 */
				claim = false;
				look_again = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000L);
			}
			/* A full claim: there may be more to claim for the free slots. */
			if (claim && list_length(running) < delivery_concurrency)
				continue;
		}
		StartWaiting();
		if (running == NIL && waiting == NIL && !claim)
			break;

		/* Wait for a transfer, the latch, the next look or the record. */
		wake_at = claim ? TimestampTzPlusMilliseconds(now, delivery_naptime * 1000L) : look_again;
		if (record_by != 0)
			wake_at = Min(wake_at, record_by);
		{
			long secs;
			int usecs;

			TimestampDifference(now, wake_at, &secs, &usecs);
			pgstat_report_activity(running != NIL ? STATE_RUNNING : STATE_IDLE,
								   running != NIL ? "aimroute: sending messages" : NULL);
			if (WaitForTransfers(secs * 1000L + (usecs + 999) / 1000))
			{
				expand = true;
				if (GetCurrentTimestamp() >= quiet_until)
					claim = true;
			}
		}
		if (room_freed)
		{
			room_freed = false;
			claim = true;
		}
	}
	return next;
}

/*
 * SmtpTlsRequired reads settings.smtp_tls, inside a transaction of the
 * worker: whether SMTP must be TLS (false in a database not updated to 0.2.0).
 */
static bool
SmtpTlsRequired(void)
{
	return WorkerFloat("SELECT (pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.->>) 'smtp_tls'"
					   " IS NOT DISTINCT FROM 'required')::integer::pg_catalog.float8"
					   " FROM aimroute.settings s",
					   true) > 0;
}

/*
 * NewMultiHandle makes the multi handle the transfers run in, with an empty
 * connection cache; the old one, with the connections it kept, is closed.
 * Only when no transfer runs.
 */
static void
NewMultiHandle(void)
{
	if (multi != NULL)
		curl_multi_cleanup(multi);
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "delivery worker: could not create a libcurl multi handle");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, WatchSocket);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, SetCurlTimer);
	nsockets = 0;
	wait_set_stale = true;
	curl_deadline = -1;
}

/*
 * EmptyPlaintextConnections closes the connections kept from sends under
 * settings.smtp_tls = 'try' once it is 'required' and nothing runs: until
 * then, each send that requires TLS opens a connection of its own.
 */
static void
EmptyPlaintextConnections(void)
{
	if (!smtp_tls_required || !plaintext_cached || running != NIL || waiting != NIL)
		return;
	NewMultiHandle();
	plaintext_cached = false;
}

/*
 * DeliveryRound is one round of the worker: the daily recap when due, then
 * the due messages (Deliver); it returns how long to sleep, in
 * milliseconds, and *missing when aimroute is not installed.
 */
static long
DeliveryRound(bool *missing)
{
	long sleep_ms = delivery_naptime * 1000L;
	double next;

	EmptyPlaintextConnections();
	sleep_ms = Min(sleep_ms, BounceMailboxRound(tls_ca_file, delivery_timeout));
	Expand();
	next = NextDue(missing);
	if (!*missing && next == 0)
	{
		next = Deliver(missing);
		/* Still due: held by another transaction; look again in a second. */
		if (next == 0)
			next = 1;
	}
	if (next >= 0 && next * 1000 < sleep_ms)
		sleep_ms = (long) (next * 1000) + 1;
	return sleep_ms;
}

/*
 * aimroute_delivery_worker_main is the worker's entry point: the skeleton
 * of worker.c with DeliveryRound as its round.
 */
void
aimroute_delivery_worker_main(Datum arg)
{
	static const WorkerKind kind = { "aimroute delivery worker", DeliveryStart, DeliveryRound };

	WorkerMain(arg, &kind);
}

/*
 * aimroute_delivery_worker_running is the SQL function
 * aimroute.delivery_worker_running(): whether this server registered the
 * delivery worker (the library is in shared_preload_libraries).
 */
Datum
aimroute_delivery_worker_running(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(WorkersRunHere());
}
