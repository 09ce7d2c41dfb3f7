/*
 * ties.c
 *		Round robin among equally near dealers (settings.tie_break =
 *		'round_robin'): which of the tied dealers has the turn, from the
 *		counters per brand and dealer of aimroute.tie_turns, and taking it.
 *
 * Routing reads the counters only when it finds a tie.  A new lead takes
 * the turn in its own transaction.  It first takes a transaction-level
 * lock on each tied dealer's turn of the brand (a lock of PostgreSQL's
 * lock manager with a tag of aimroute's own, which no SQL function can
 * take, in the order of the tags: two choices never wait for each other),
 * then reads the counters with a snapshot taken after the locks, so it sees
 * what every session that chose among these dealers before it left; the
 * dealer with the fewest leads by turn wins, the one whose last turn is
 * the longest ago among equals, the lowest dealer number among those; its
 * row counts the lead, inserted by its first turn of the brand (one
 * statement, an upsert, so that a row deleted meanwhile to reset the turns
 * is made again).  A session choosing among any of the same dealers
 * meanwhile waits for that transaction to end, so no turn is given twice.
 * The locks take no WAL and the counters are read from
 * the table's primary key without a statement; both cost about a
 * microsecond.  At REPEATABLE READ and SERIALIZABLE the counters are read
 * with the transaction's snapshot, and a counter another session changed
 * since fails the statement with 40001, as an UPDATE would.
 * The dealer locator, route(), simulate_routing and coverage read the
 * counters without the locks and without taking a turn.
 * The counters are read and written as the extension's owner: whoever may
 * insert a lead or ask the locator (PUBLIC) may see the turns' outcome,
 * but needs no rights on the table.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "kept_plan.h"
#include "owner.h"
#include "search_path.h"
#include "ties.h"

/* The tag's last field: a lock no SQL function can take (model_share.c uses 0x4152). */
#define TURN_LOCK_FIELD4 0x5454

static const char *const take_sql =
	"INSERT INTO aimroute.tie_turns AS t (brand_code, dealer_number, leads, last_at)"
	" VALUES ($1, $2, 1, pg_catalog.clock_timestamp())"
	" ON CONFLICT (brand_code, dealer_number)"
	" DO UPDATE SET leads = t.leads + 1, last_at = pg_catalog.clock_timestamp()";

static SPIPlanPtr take_plan = NULL;

static void LockTurns(const char *brand, const char *const *dealers, int n);
static int CompareTags(const void *a, const void *b);
static void ReadTurns(const char *brand, const char *const *dealers, int n, Snapshot snapshot,
					  TieTurn *turns);

/*
 * TieChoose returns which of n tied dealers (numbers in byte order) has the
 * turn for a lead of a brand, and fills turns with each one's counters as
 * they were.  With lock, for a new lead, the tied dealers' turns are locked
 * first and the counters read as the sessions before it left them; the
 * turn is counted by TieTake, once the lead's dealer is settled (a winner
 * at its daily cap does not get the lead, nor the turn).
 */
int
TieChoose(const char *brand, const char *const *dealers, int n, bool lock, TieTurn *turns)
{
	Snapshot snapshot;
	int winner = 0;

	if (lock)
	{
		LockTurns(brand, dealers, n);
		snapshot = IsolationUsesXactSnapshot() ? GetTransactionSnapshot() : GetLatestSnapshot();
	}
	else
		snapshot = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
	snapshot = RegisterSnapshot(snapshot);
	ReadTurns(brand, dealers, n, snapshot, turns);
	UnregisterSnapshot(snapshot);

	for (int i = 1; i < n; i++)
		if (TieTurnFirst(&turns[i], &turns[winner]))
			winner = i;
	return winner;
}

/*
 * TieTake counts a lead's turn for the dealer TieChoose gave it to, in the
 * current transaction, under the locks TieChoose took.
 */
void
TieTake(const char *brand, const char *dealer)
{
	Oid types[2] = { TEXTOID, TEXTOID };
	Datum args[2];
	OwnerSwitch owner;
	int pinned = SpiConnectPinned();

	BecomeExtensionOwner(&owner);
	args[0] = CStringGetTextDatum(brand);
	args[1] = CStringGetTextDatum(dealer);
	if (SPI_execute_plan(KeptPlan(&take_plan, take_sql, 2, types, 0), args, NULL, false, 0) !=
			SPI_OK_INSERT ||
		SPI_processed != 1)
		elog(ERROR, "could not count the round robin turn of dealer %s", dealer);
	RestoreCaller(&owner);
	SpiFinishPinned(pinned);
}

/*
 * LockTurns takes, until the end of the transaction, the lock of each
 * dealer's turn of the brand, in the order of the locks' tags.  A tag is
 * the database and hashes of the brand and the dealer number: two dealers
 * whose hashes meet share a lock, which only makes sessions wait more.
 */
static void
LockTurns(const char *brand, const char *const *dealers, int n)
{
	uint32 *keys = palloc(sizeof(uint32) * n);
	uint32 brand_key = hash_bytes((const unsigned char *) brand, strlen(brand));

	for (int i = 0; i < n; i++)
		keys[i] = hash_bytes((const unsigned char *) dealers[i], strlen(dealers[i]));
	qsort(keys, n, sizeof(uint32), CompareTags);
	for (int i = 0; i < n; i++)
	{
		LOCKTAG tag;

		if (i > 0 && keys[i] == keys[i - 1])
			continue;
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, brand_key, keys[i], TURN_LOCK_FIELD4);
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
	}
	pfree(keys);
}

static int
CompareTags(const void *a, const void *b)
{
	uint32 x = *(const uint32 *) a;
	uint32 y = *(const uint32 *) b;

	return x < y ? -1 : x > y;
}

/*
 * ReadTurns reads each tied dealer's counters from aimroute.tie_turns by
 * its primary key with the snapshot given (none yet for a dealer without a
 * row).
 */
static void
ReadTurns(const char *brand, const char *const *dealers, int n, Snapshot snapshot, TieTurn *turns)
{
	Oid relid = get_relname_relid("tie_turns", get_namespace_oid("aimroute", false));
	Relation rel;
	Relation irel;
	Oid index;
	Oid collation[2];
	AttrNumber brand_at;
	AttrNumber dealer_at;
	AttrNumber leads_at;
	AttrNumber last_at;

	if (!OidIsValid(relid))
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("round robin needs table aimroute.tie_turns, which does not exist"),
						errhint("Run ALTER EXTENSION aimroute UPDATE.")));
	rel = table_open(relid, AccessShareLock);
	index = RelationGetPrimaryKeyIndex(rel);
	brand_at = get_attnum(relid, "brand_code");
	dealer_at = get_attnum(relid, "dealer_number");
	leads_at = get_attnum(relid, "leads");
	last_at = get_attnum(relid, "last_at");
	if (!OidIsValid(index) || brand_at == InvalidAttrNumber || dealer_at == InvalidAttrNumber ||
		leads_at == InvalidAttrNumber || last_at == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table aimroute.tie_turns lacks the primary key or a column round robin "
						"reads"),
				 errhint("Put the table back as the extension made it (ALTER EXTENSION aimroute "
						 "UPDATE, or DROP and CREATE EXTENSION).")));
	irel = index_open(index, AccessShareLock);
	collation[0] = irel->rd_indcollation[0];
	collation[1] = irel->rd_indcollation[1];
	index_close(irel, AccessShareLock);
	memset(turns, 0, sizeof(TieTurn) * n);
	for (int i = 0; i < n; i++)
	{
		ScanKeyData keys[2];
		SysScanDesc scan;
		HeapTuple tuple;

		/* Heap attribute numbers: systable_beginscan maps them to the index's. */
		ScanKeyEntryInitialize(&keys[0], 0, brand_at, BTEqualStrategyNumber, InvalidOid,
							   collation[0], F_TEXTEQ, CStringGetTextDatum(brand));
		ScanKeyEntryInitialize(&keys[1], 0, dealer_at, BTEqualStrategyNumber, InvalidOid,
							   collation[1], F_TEXTEQ, CStringGetTextDatum(dealers[i]));
		scan = systable_beginscan(rel, index, true, snapshot, 2, keys);
		tuple = systable_getnext(scan);
		if (HeapTupleIsValid(tuple))
		{
			TupleDesc desc = RelationGetDescr(rel);
			bool isnull;
			bool never;
			Datum last = heap_getattr(tuple, last_at, desc, &never);

			turns[i].leads = DatumGetInt64(heap_getattr(tuple, leads_at, desc, &isnull));
			turns[i].had_turn = !never;
			turns[i].last_at = never ? 0 : DatumGetTimestampTz(last);
		}
		systable_endscan(scan);
	}
	table_close(rel, AccessShareLock);
}

/*
 * TieTurnFirst tells whether a dealer's turn comes before another's: fewer
 * leads by turn, then no turn yet, then the last turn longer ago; a tie of
 * those goes to the earlier dealer of the list (the lower number).
 */
bool
TieTurnFirst(const TieTurn *a, const TieTurn *b)
{
	if (a->leads != b->leads)
		return a->leads < b->leads;
	if (a->had_turn != b->had_turn)
		return !a->had_turn;
	return a->had_turn && a->last_at < b->last_at;
}
