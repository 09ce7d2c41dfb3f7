/*
 * reroute_worker.c
 *		The background worker that re-routes overdue unviewed leads.
 *
 * One worker per database of aimroute.database (worker.c), registered
 * when the library is in shared_preload_libraries.  It starts once the
 * server accepts writes (BgWorkerStart_RecoveryFinished), so on a hot
 * standby it does not run at all and on a promoted standby it starts with
 * the promotion.  Each round re-routes overdue leads in batches, one short
 * transaction per batch (aimroute.reroute_overdue, which claims leads with
 * FOR UPDATE SKIP LOCKED), then sleeps until the earliest deadline left,
 * or aimroute.reroute_naptime at most, whichever comes first.  A new
 * deadline is always at least reroute_after (one minute or more) away, so
 * a naptime of at most a minute never wakes after a deadline that was set
 * while the worker slept.
 *
 * A batch is one transaction: if the worker dies half way, nothing of the
 * batch happened, and the next worker takes the same leads again.  A lead
 * whose re-route raises is set aside by reroute_overdue (with its error, in
 * aimroute.set_aside_items, and a WARNING) and tried again later, so one bad
 * lead never stops the others.  Any other error ends the worker with exit
 * code 1, and the postmaster starts it again after bgw_restart_time.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#include "reroute_worker.h"
#include "worker.h"

#define BATCH_SIZE 100

PGDLLEXPORT void aimroute_reroute_worker_main(Datum arg);

static int reroute_naptime = 60;

PG_FUNCTION_INFO_V1(aimroute_reroute_worker_running);

/*
 * RerouteWorkerInit defines the worker's settings and, when the library is
 * being preloaded, registers the worker.
 */
void
RerouteWorkerInit(void)
{
	DefineCustomIntVariable(
		"aimroute.reroute_naptime", "Longest sleep of the re-route worker between checks.",
		"It also wakes at the earliest deadline.  At most a minute, the shortest reroute_after, so that a deadline set while it sleeps is never missed.",
		&reroute_naptime, 60, 1, 60, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	/* The workers exist only when the library is preloaded. */
	if (!process_shared_preload_libraries_in_progress)
		return;
	WorkerRegister("aimroute_reroute_worker_main", "aimroute re-route worker");
}

/*
 * RunStatement runs one statement of the worker in a transaction of its
 * own and returns the first column of the first row as a double, or -1 when it is
 * NULL or there is no row.  *missing tells whether the extension is not
 * installed: then it runs nothing.
 */
static double
RunStatement(const char *activity, const char *sql, bool *missing)
{
	double value = -1;

	*missing = !WorkerBeginTransaction(activity);
	if (*missing)
	{
		WorkerCommitTransaction();
		return value;
	}
	value = WorkerFloat(sql, false);
	WorkerCommitTransaction();
	return value;
}

/*
 * NextDeadline returns the milliseconds to the earliest deadline (a
 * set-aside lead's at its retry time): 0 when it passed already, -1 when
 * there is none or it is not known.  A database still at 0.1.0 (ALTER
 * EXTENSION aimroute UPDATE not run yet) has no reroute_next_due(): there
 * the worker looks again after its naptime, a minute at most.
 */
static double
NextDeadline(bool *missing)
{
	double value = -1;

	*missing = !WorkerBeginTransaction("aimroute: finding the next deadline");
	if (!*missing && WorkerHasFunction("reroute_next_due"))
		value = WorkerFloat("SELECT aimroute.reroute_next_due() OPERATOR(pg_catalog.*) 1000", true);
	WorkerCommitTransaction();
	return value;
}

/*
 * RunOnce re-routes every overdue lead and returns how long to sleep, in
 * milliseconds; *missing tells whether the extension is not installed.
 */
static long
RunOnce(bool *missing)
{
	long naptime_ms = reroute_naptime * 1000L;
	double next;

	while (RunStatement("aimroute: re-routing overdue leads",
						"SELECT aimroute.reroute_overdue(" CppAsString2(BATCH_SIZE) ")::float8",
						missing) >= BATCH_SIZE)
		CHECK_FOR_INTERRUPTS();
	if (*missing)
		return naptime_ms;

	next = NextDeadline(missing);
	if (next < 0 || next > naptime_ms)
		return naptime_ms;
	/*
	 * A deadline passed that the batches just run did not take: its lead is
	 * locked by another transaction (reroute_overdue skips it).  Look again
	 * in a second rather than spin until the lock is gone.
	 */
	if (next == 0)
		return 1000;
	/* Just after the deadline, so that it has passed when looked at. */
	return (long) next + 1;
}

/*
 * aimroute_reroute_worker_main is the worker's entry point: the skeleton
 * of worker.c with RunOnce as its round.
 */
void
aimroute_reroute_worker_main(Datum arg)
{
	static const WorkerKind kind = { "aimroute re-route worker", NULL, RunOnce };

	WorkerMain(arg, &kind);
}

/*
 * aimroute_reroute_worker_running is the SQL function
 * aimroute.reroute_worker_running(): whether this server registered the
 * worker (the library is in shared_preload_libraries).
 */
Datum
aimroute_reroute_worker_running(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(WorkersRunHere());
}
