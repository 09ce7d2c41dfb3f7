/*
 * delivery_worker.c
 *		The background worker that sends lead notices by SMTP and HTTP.
 *
 * One worker per cluster, in the database aimroute.database, registered
 * with the re-route worker when the library is preloaded; like it, it
 * starts once the server accepts writes, so a hot standby sends nothing.
 *
 * A round: expand the leads routing marked to be sent into their notices
 * and messages (aimroute.delivery_expand, set-based, a batch a
 * transaction); queue the daily recap when its hour has come; then, batch
 * by batch, expanding again before each, claim due messages
 * (aimroute.delivery_claim: FOR UPDATE SKIP LOCKED, a lease of
 * aimroute.delivery_lease, rendered by SQL) and commit;
 * send each one through libcurl with no transaction open; record each
 * outcome (aimroute.delivery_record) in a short transaction of its own,
 * right after its send.  A worker that dies after sending and before
 * recording leaves the message 'sending'; when its lease runs out the next
 * claim sends it again with the same Message-ID or Idempotency-Key.  What
 * is recorded as delivered is never claimed again.
 *
 * Nothing stalls on one bad item (SPEC section 8): a message whose claim or
 * record raises is set aside by SQL (aimroute.set_aside_items) and the
 * others go on; a lead whose expansion raises keeps its mark, with a
 * WARNING (delivery_expand); a daily recap that raises is a WARNING, tried
 * again later.
 *
 * The worker sleeps until the earliest due message, aimroute.delivery_naptime
 * at most, or until a backend that queued messages sets its latch at commit.
 * Outcomes are SQL's to judge (which reply is a bounce, when to retry), so
 * this file only moves bytes and reports libcurl's code, the server's
 * reply code and its text.
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
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "delivery.h"
#include "reroute_worker.h"
#include "worker.h"

#define RESPONSE_MAX 1000 /* bytes of a server's reply kept */
#define EXPAND_BATCH 1000 /* marked leads expanded a transaction */

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
static DeliveryShared *delivery_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_at_commit = false;
static MemoryContext round_context = NULL;
static CURL *smtp_handle = NULL;
static CURL *http_handle = NULL;
static TimestampTz recap_retry_at = 0;
static int recap_failures = 0;

static void DeliveryShmemRequest(void);
static void DeliveryShmemStartup(void);
static void WakeAtCommit(XactEvent event, void *arg);
static char *CopyColumn(HeapTuple row, TupleDesc desc, int column);
static List *ClaimBatch(void);
static void Send(CURL *h, DeliveryJob *job, DeliveryOutcome *out);
static struct curl_slist *SmtpOptions(CURL *h, DeliveryJob *job, DeliveryOutcome *out,
									  UploadState *upload);
static struct curl_slist *HttpOptions(CURL *h, DeliveryJob *job, DeliveryOutcome *out);
static void Record(DeliveryJob *job, DeliveryOutcome *out);
static void QueueDailyRecap(void);
static double NextDue(bool *missing);
static void Release(List *jobs, ListCell *from);
static uint32 HoldShutdown(void);
static void ResumeShutdown(uint32 held);
static void ForgetLatch(int code, Datum arg);
static void DeliveryStart(int slot);
static void TakeBack(void);
static void Expand(void);
static void DeliverBatch(List *jobs);
static long DeliveryRound(bool *missing);
static char *PrintableText(const StringInfo s);

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
							"Messages the delivery worker claims at a time.", NULL,
							&delivery_batch_size, 50, 1, 10000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable(
		"aimroute.delivery_timeout", "Longest time one SMTP or HTTP send may take.",
		"A send that takes longer fails and is retried on the schedule.", &delivery_timeout, 30, 1,
		600, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable(
		"aimroute.delivery_lease", "How long a claimed message is the delivery worker's.",
		"A worker that stops between sending a message and recording the outcome leaves it claimed; the restarted worker takes it back at once and sends it again, with the same Message-ID.  The lease bounds only a claim nobody takes back.",
		&delivery_lease, 300, 1, 86400, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

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
 * CopyColumn copies a text column of an SPI row into the round's memory
 * (NULL stays NULL).
 */
static char *
CopyColumn(HeapTuple row, TupleDesc desc, int column)
{
	char *value = SPI_getvalue(row, desc, column);

	return value == NULL ? NULL : MemoryContextStrdup(round_context, value);
}

/*
 * ClaimBatch claims up to aimroute.delivery_batch_size due messages and
 * returns them as DeliveryJobs in the round's memory; the claim is
 * committed when it returns.
 */
static List *
ClaimBatch(void)
{
	static const char *const sql =
		"SELECT message_id, attempt, transport, url, mail_from, recipient, username, password,"
		" content_type, message_key, payload"
		" FROM aimroute.delivery_claim($1, make_interval(secs => $2))";
	Oid types[2] = { INT4OID, FLOAT8OID };
	Datum args[2];
	List *jobs = NIL;

	if (!WorkerBeginTransaction("aimroute: claiming due messages"))
	{
		WorkerCommitTransaction();
		return NIL;
	}
	args[0] = Int32GetDatum(delivery_batch_size);
	args[1] = Float8GetDatum((double) delivery_lease);
	if (SPI_execute_with_args(sql, 2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "delivery worker: could not claim messages");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		DeliveryJob *job = MemoryContextAllocZero(round_context, sizeof(DeliveryJob));
		char *transport = SPI_getvalue(row, desc, 3);
		bool isnull;

		job->message_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		job->attempt = DatumGetInt32(SPI_getbinval(row, desc, 2, &isnull));
		job->smtp = transport != NULL && strcmp(transport, "smtp") == 0;
		job->url = CopyColumn(row, desc, 4);
		job->mail_from = CopyColumn(row, desc, 5);
		job->recipient = CopyColumn(row, desc, 6);
		job->username = CopyColumn(row, desc, 7);
		job->password = CopyColumn(row, desc, 8);
		job->content_type = CopyColumn(row, desc, 9);
		job->message_key = CopyColumn(row, desc, 10);
		/* What goes on the wire is UTF-8, whatever the database encoding. */
		job->payload = CopyColumn(row, desc, 11);
		if (job->payload != NULL)
			job->payload = MemoryContextStrdup(
				round_context, pg_server_to_any(job->payload, strlen(job->payload), PG_UTF8));
		if (job->url == NULL || job->payload == NULL)
			elog(ERROR, "delivery worker: message " INT64_FORMAT " has no address or content",
				 job->message_id);
		{
			MemoryContext old = MemoryContextSwitchTo(round_context);

			jobs = lappend(jobs, job);
			MemoryContextSwitchTo(old);
		}
	}
	WorkerCommitTransaction();
	return jobs;
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
 * the worker is asked to stop.
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
	/* STARTTLS when the server offers it; smtps:// is TLS throughout. */
	curl_easy_setopt(h, CURLOPT_USE_SSL, (long) CURLUSESSL_TRY);
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
 * Send sends one message and says what came of it.  Nothing here may
 * raise an error: the outcome, whatever it is, must be recorded.
 */
static void
Send(CURL *h, DeliveryJob *job, DeliveryOutcome *out)
{
	char error[CURL_ERROR_SIZE];
	struct curl_slist *list;
	UploadState upload;
	CURLcode rc;

	error[0] = '\0';
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, job->url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long) delivery_timeout);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long) Min(delivery_timeout, 10));
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, StopOnShutdown);
	list = job->smtp ? SmtpOptions(h, job, out, &upload) : HttpOptions(h, job, out);

	rc = curl_easy_perform(h);
	out->curl_code = (int) rc;
	out->response_code = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->response_code);
	if (rc != CURLE_OK)
	{
		if (out->response.len > 0)
			appendStringInfoString(&out->response, "; ");
		appendStringInfoString(&out->response, error[0] != '\0' ? error : curl_easy_strerror(rc));
	}
	else if (!job->smtp)
		appendStringInfo(&out->response, "%sHTTP %ld", out->response.len > 0 ? "; " : "",
						 out->response_code);

	curl_slist_free_all(list);
	/* Options must not point to freed memory once the handle is reused. */
	curl_easy_reset(h);
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
Record(DeliveryJob *job, DeliveryOutcome *out)
{
	static const char *const sql = "SELECT aimroute.delivery_record($1, $2, $3, $4, $5, $6)";
	Oid types[6] = { INT8OID, INT4OID, INT4OID, INT4OID, TEXTOID, TEXTOID };
	Datum args[6];
	char nulls[6] = "      ";
	char *text;
	uint32 held;

	text = PrintableText(&out->response);
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
	args[0] = Int64GetDatum(job->message_id);
	args[1] = Int32GetDatum(job->attempt);
	args[2] = Int32GetDatum(out->curl_code);
	args[3] = Int32GetDatum((int32) out->response_code);
	args[4] = CStringGetTextDatum(text);
	/* GREETING: the server refused before any command (no bounce). */
	args[5] = CStringGetTextDatum(out->command[0] != '\0' ? out->command : "GREETING");
	if (!job->smtp)
		nulls[5] = 'n';
	if (SPI_execute_with_args(sql, 6, types, args, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "delivery worker: could not record the outcome of message " INT64_FORMAT,
			 job->message_id);
	WorkerCommitTransaction();
	ResumeShutdown(held);
}

/*
 * Release gives back the claimed messages not sent yet, from the list cell
 * from on, when the worker is asked to stop (aimroute.delivery_give_back):
 * they are due again at once, rather than when their lease runs out.  A
 * database not updated to this version yet has no such function: there
 * they wait for the next worker to take them back, or for their lease.
 */
static void
Release(List *jobs, ListCell *from)
{
	static const char *const sql = "SELECT aimroute.delivery_give_back($1, $2)";
	Oid types[2] = { INT8OID, INT4OID };
	uint32 held = HoldShutdown();

	if (!WorkerBeginTransaction("aimroute: giving back unsent messages") ||
		!WorkerHasFunction("delivery_give_back"))
		from = NULL;
	for_each_cell(from, jobs, from)
	{
		DeliveryJob *job = (DeliveryJob *) lfirst(from);
		Datum args[2] = { Int64GetDatum(job->message_id), Int32GetDatum(job->attempt) };

		if (SPI_execute_with_args(sql, 2, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "delivery worker: could not give back message " INT64_FORMAT,
				 job->message_id);
	}
	WorkerCommitTransaction();
	ResumeShutdown(held);
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
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	if (GetCurrentTimestamp() < recap_retry_at)
		return;
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		if (SPI_execute("SELECT aimroute.queue_daily_recap()", false, 1) != SPI_OK_SELECT)
			elog(ERROR, "delivery worker: could not queue the daily recap");
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
		recap_failures = 0;
	}
	PG_CATCH();
	{
		ErrorData *error;
		int minutes;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;

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
	PG_END_TRY();
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
 * DeliveryStart readies the worker once it is connected: libcurl, the
 * round's memory, and its latch published in the database's slot, so that
 * a commit that queued messages wakes it.
 */
static void
DeliveryStart(int slot)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "delivery worker: could not initialize libcurl");
	smtp_handle = curl_easy_init();
	http_handle = curl_easy_init();
	if (smtp_handle == NULL || http_handle == NULL)
		elog(ERROR, "delivery worker: could not create libcurl handles");
	round_context =
		AllocSetContextCreate(TopMemoryContext, "aimroute delivery round", ALLOCSET_DEFAULT_SIZES);
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
 * DeliverBatch sends each claimed message and records its outcome, one
 * message at a time; on a shutdown it gives back what it has not sent.
 */
static void
DeliverBatch(List *jobs)
{
	ListCell *lc;

	foreach (lc, jobs)
	{
		DeliveryJob *job = (DeliveryJob *) lfirst(lc);
		DeliveryOutcome out;
		MemoryContext old;

		if (ProcDiePending)
		{
			Release(jobs, lc);
			CHECK_FOR_INTERRUPTS();
		}
		old = MemoryContextSwitchTo(round_context);
		memset(&out, 0, sizeof(out));
		initStringInfo(&out.response);
		pgstat_report_activity(STATE_RUNNING, "aimroute: sending a message");
		Send(job->smtp ? smtp_handle : http_handle, job, &out);
		MemoryContextSwitchTo(old);
		/* A send cut short by a shutdown is given back, not judged. */
		if (ProcDiePending && out.curl_code == CURLE_ABORTED_BY_CALLBACK)
		{
			Release(jobs, lc);
			CHECK_FOR_INTERRUPTS();
		}
		Record(job, &out);
		if (ProcDiePending)
		{
			Release(jobs, lnext(jobs, lc));
			CHECK_FOR_INTERRUPTS();
		}
	}
}

/*
 * DeliveryRound is one round of the worker: the daily recap when due, then
 * batches of due messages until none is left; it returns how long to
 * sleep, in milliseconds, and *missing when aimroute is not installed.
 */
static long
DeliveryRound(bool *missing)
{
	long sleep_ms = delivery_naptime * 1000L;
	double next;

	MemoryContextReset(round_context);
	Expand();
	next = NextDue(missing);
	if (!*missing && next == 0)
	{
		List *jobs = NIL;

		do
		{
			/* Leads routed while the last batch was sent go in the next. */
			if (jobs != NIL)
				Expand();
			jobs = ClaimBatch();
			DeliverBatch(jobs);
			MemoryContextReset(round_context);
		} while (list_length(jobs) >= delivery_batch_size);
		next = NextDue(missing);
		/*
		 * Still due right after claiming everything it could: a row another
		 * transaction holds (SKIP LOCKED).  Look again in a second, not at
		 * once, or the worker spins until it is free; anything queued
		 * meanwhile still wakes it.
		 */
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
