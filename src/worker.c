/*
 * worker.c
 *		What the re-route and delivery workers share.
 *
 * Each unit of a worker's work is one short transaction, connected to SPI
 * and shown in pg_stat_activity while it runs.  The workers connect as the
 * bootstrap superuser, but every statement they run, they run as the
 * extension's owner (owner.c): when aimroute is not installed, they run
 * none.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/snapmgr.h"

#include "owner.h"
#include "reroute_worker.h"
#include "worker.h"

static OwnerSwitch worker_owner;

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
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
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
	SPI_finish();
	PopActiveSnapshot();
	ForgetOwnerSettings(&worker_owner);
	CommitTransactionCommand();
	RestoreCaller(&worker_owner);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * WorkerServesThisDatabase tells whether the workers, when registered, run
 * in the current database (aimroute.database): in any other, nothing
 * re-routes or sends its leads.
 */
bool
WorkerServesThisDatabase(void)
{
	char *name = get_database_name(MyDatabaseId);

	return aimroute_worker_database != NULL && name != NULL &&
		   strcmp(name, aimroute_worker_database) == 0;
}
