/*
 * worker.c
 *		What the re-route and delivery workers share.
 *
 * Each unit of a worker's work is one short transaction, connected to SPI
 * and shown in pg_stat_activity while it runs.  The workers connect as the
 * bootstrap superuser, but every statement they run, they run as the
 * extension's owner (owner.c): when aimroute is not installed, they run
 * none.  Their statements run under aimroute's own search_path
 * (search_path.c), whatever the database's or the role's.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/snapmgr.h"

#include "owner.h"
#include "reroute_worker.h"
#include "search_path.h"
#include "worker.h"

static OwnerSwitch worker_owner;
static int worker_pinned; /* what SpiFinishPinned restores */

/*
 * WorkerBeginTransaction starts a transaction of the worker, connected to
 * SPI, with a snapshot, as the extension's owner, and reports activity in
 * pg_stat_activity.  It returns false when aimroute is not installed in the
 * database: the caller must then run no statement, only
 * WorkerCommitTransaction.
 */
bool
WorkerBeginTransaction(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	BecomeExtensionOwner(&worker_owner);
	worker_pinned = SpiConnectPinned();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	return worker_owner.switched;
}

/*
 * WorkerCommitTransaction commits the transaction WorkerBeginTransaction
 * started, and reports the worker idle.  Settings the transaction changed
 * are undone; the owner stays the current user until the commit is over,
 * so that deferred triggers too run as the owner.
 */
void
WorkerCommitTransaction(void)
{
	SpiFinishPinned(worker_pinned);
	PopActiveSnapshot();
	ForgetOwnerSettings(&worker_owner);
	CommitTransactionCommand();
	RestoreCaller(&worker_owner);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

static bool workers_registered = false;

/*
 * WorkerRegister registers one of aimroute's background workers (the
 * library is being preloaded): connected to aimroute.database, started once
 * recovery is over, restarted ten seconds after it stops.
 */
void
WorkerRegister(const char *function, const char *name)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 10;
	strlcpy(worker.bgw_library_name, "aimroute", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker.bgw_name, name, BGW_MAXLEN);
	strlcpy(worker.bgw_type, name, BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
	workers_registered = true;
}

/*
 * WorkersRunHere tells whether this server registered the workers (the
 * library is in shared_preload_libraries) and they run in the current
 * database (aimroute.database): in any other, nothing re-routes or sends
 * its leads.
 */
bool
WorkersRunHere(void)
{
	char *name;

	if (!workers_registered || aimroute_worker_database == NULL)
		return false;
	name = get_database_name(MyDatabaseId);
	return name != NULL && strcmp(name, aimroute_worker_database) == 0;
}
