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
 *
 * aimroute.database names the databases they serve, a comma-separated
 * list: a cluster often holds several databases with aimroute (one per
 * brand family or per customer).  The setting can change only at a
 * restart, so the list is known when the library is preloaded, and each
 * worker is registered once per database, with the database's place in
 * the list as its argument.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/catcache.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "owner.h"
#include "search_path.h"
#include "worker.h"

static OwnerSwitch worker_owner;
static int worker_pinned; /* what SpiFinishPinned restores */

/* aimroute.database, and the databases it names, in its order. */
static char *worker_database_setting = NULL;
static char *worker_databases[AIMROUTE_MAX_DATABASES];
static int worker_ndatabases = 0;
static bool workers_registered = false;

static bool CheckDatabases(char **newval, void **extra, GucSource source);
static int SplitDatabases(const char *setting, char **names, MemoryContext context);

/*
 * WorkerInit defines aimroute.database when the library is being preloaded
 * (without the workers the setting means nothing), and reads its list.
 */
void
WorkerInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomStringVariable(
		"aimroute.database", "Databases in which the aimroute workers run.",
		"A comma-separated list of the databases where CREATE EXTENSION aimroute was run; each gets a re-route worker and a delivery worker.",
		&worker_database_setting, "postgres", PGC_POSTMASTER, GUC_LIST_INPUT, CheckDatabases, NULL,
		NULL);
	worker_ndatabases = SplitDatabases(worker_database_setting, worker_databases, TopMemoryContext);
}

/*
 * CheckDatabases refuses an aimroute.database that names no database, too
 * many, or one twice.
 */
static bool
CheckDatabases(char **newval, void **extra, GucSource source)
{
	char *names[AIMROUTE_MAX_DATABASES];
	int n = SplitDatabases(*newval, names, CurrentMemoryContext);

	if (n < 0)
	{
		GUC_check_errdetail(
			"It is a comma-separated list of at most %d database names, such as \"leads_boats, leads_rv\".",
			AIMROUTE_MAX_DATABASES);
		return false;
	}
	for (int i = 0; i < n; i++)
		for (int j = 0; j < i; j++)
			if (strcmp(names[i], names[j]) == 0)
			{
				GUC_check_errdetail("Database \"%s\" is named twice.", names[i]);
				return false;
			}
	return true;
}

/*
 * SplitDatabases splits aimroute.database into names, copied into context;
 * -1 when it is empty, malformed or too long a list.
 */
static int
SplitDatabases(const char *setting, char **names, MemoryContext context)
{
	char *copy;
	List *list = NIL;
	ListCell *lc;
	int n = 0;

	if (setting == NULL)
		return -1;
	copy = MemoryContextStrdup(context, setting);
	if (!SplitGUCList(copy, ',', &list) || list_length(list) == 0 ||
		list_length(list) > AIMROUTE_MAX_DATABASES)
		return -1;
	foreach (lc, list)
	{
		const char *name = lfirst(lc);

		if (name[0] == '\0')
			return -1;
		names[n++] = (char *) name;
	}
	list_free(list);
	return n;
}

/*
 * WorkerDatabase is the name of the database a worker registered with
 * WorkerRegister serves, from the argument the postmaster gave it.
 */
const char *
WorkerDatabase(Datum arg)
{
	int i = DatumGetInt32(arg);

	if (i < 0 || i >= worker_ndatabases)
		elog(ERROR, "aimroute worker started for database number %d of %d", i, worker_ndatabases);
	return worker_databases[i];
}

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

/*
 * WorkerRegister registers one of aimroute's background workers for each
 * database of aimroute.database (the library is being preloaded, and not
 * by pg_upgrade): started once recovery is over, restarted ten seconds
 * after it stops.
 */
void
WorkerRegister(const char *function, const char *name)
{
	/* pg_upgrade starts the server to move the catalogs: nothing to do. */
	if (IsBinaryUpgrade)
		return;
	for (int i = 0; i < worker_ndatabases; i++)
	{
		BackgroundWorker worker;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = 10;
		worker.bgw_main_arg = Int32GetDatum(i);
		strlcpy(worker.bgw_library_name, "aimroute", BGW_MAXLEN);
		strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
		snprintf(worker.bgw_name, BGW_MAXLEN, "%s for database %s", name, worker_databases[i]);
		strlcpy(worker.bgw_type, name, BGW_MAXLEN);
		RegisterBackgroundWorker(&worker);
		workers_registered = true;
	}
}

/*
 * WorkerMain is the skeleton of both workers: signals, the connection to
 * the database it serves, then rounds of kind's work, sleeping on the
 * latch between them (a SIGHUP reloads the configuration, a SIGTERM ends
 * it through die, the postmaster's death ends it too).  An ERROR ends the
 * worker with exit code 1, and the postmaster starts it again after
 * bgw_restart_time; a lead or message that fails is set aside by the
 * round's SQL, so that no error comes back every round.
 */
void
WorkerMain(Datum arg, const WorkerKind *kind)
{
	const char *database = WorkerDatabase(arg);
	bool reported_missing = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(database, NULL, 0);
	pgstat_report_appname(kind->name);
	ereport(LOG, (errmsg("%s started in database \"%s\"", kind->name, database)));
	if (kind->start != NULL)
		kind->start(DatumGetInt32(arg));

	for (;;)
	{
		bool missing = false;
		long sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		sleep_ms = kind->round(&missing);
		/* Said once: the extension may simply not be created yet. */
		if (missing && !reported_missing)
			ereport(
				LOG,
				(errmsg("%s: extension aimroute is not installed in database \"%s\"", kind->name,
						database),
				 errhint(
					 "CREATE EXTENSION aimroute there, or set aimroute.database to the database that has it.")));
		reported_missing = missing;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, sleep_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * WorkerFloat runs one statement of the round in the worker's transaction
 * and returns the first column of its first row as a double; -1 when that
 * is NULL or there is no row.
 */
double
WorkerFloat(const char *sql, bool read_only)
{
	bool isnull;
	Datum d;

	if (SPI_execute(sql, read_only, 1) < 0)
		elog(ERROR, "aimroute worker: could not run \"%s\"", sql);
	if (SPI_processed == 0)
		return -1;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? -1 : DatumGetFloat8(d);
}

/*
 * WorkerHasFunction tells whether schema aimroute has a function of that
 * name.  A database not yet updated to this library's version (ALTER
 * EXTENSION aimroute UPDATE) lacks the newest, and the workers run there
 * all the same.  Inside a transaction of the worker.
 */
bool
WorkerHasFunction(const char *name)
{
	Oid namespace = get_namespace_oid("aimroute", true);
	CatCList *list;
	bool found = false;

	if (!OidIsValid(namespace))
		return false;
	list = SearchSysCacheList1(PROCNAMEARGSNSP, CStringGetDatum(name));
	for (int i = 0; i < list->n_members && !found; i++)
		found = ((Form_pg_proc) GETSTRUCT(&list->members[i]->tuple))->pronamespace == namespace;
	ReleaseSysCacheList(list);
	return found;
}

/*
 * WorkersRunHere tells whether this server registered the workers (the
 * library is in shared_preload_libraries) and they run in the current
 * database (one of aimroute.database): in any other, nothing re-routes or
 * sends its leads.
 */
bool
WorkersRunHere(void)
{
	char *name;

	if (!workers_registered)
		return false;
	name = get_database_name(MyDatabaseId);
	for (int i = 0; name != NULL && i < worker_ndatabases; i++)
		if (strcmp(name, worker_databases[i]) == 0)
			return true;
	return false;
}
