/*
 * worker.c
 *		What the re-route and delivery workers share.
 *
 * Each unit of a worker's work is one short transaction, connected to SPI
 * and shown in pg_stat_activity while it runs.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/snapmgr.h"

#include "reroute_worker.h"
#include "worker.h"

/*
 * WorkerBeginTransaction starts a transaction of the worker, connected to
 * SPI, with a snapshot, and reports activity in pg_stat_activity.
 */
void
WorkerBeginTransaction(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/*
 * WorkerCommitTransaction commits the transaction WorkerBeginTransaction
 * started, and reports the worker idle.
 */
void
WorkerCommitTransaction(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
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
