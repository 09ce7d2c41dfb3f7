/*
 * ties.c
 *		Round robin among equally near dealers (settings.tie_break =
 *		'round_robin'): which of the tied dealers has the turn, from the
 *		counters per brand and dealer of aimroute.tie_turns, and taking it.
 *
 * Routing reads the counters only when it finds a tie.  A new lead takes
 * the turn in its own transaction: the tied dealers' rows are locked
 * (FOR UPDATE, in dealer number order, byte by byte), the dealer with the
 * fewest leads by turn wins, the one whose last turn is the longest ago
 * among equals, the lowest dealer number among those; its row counts the
 * lead.  A session choosing among the same dealers meanwhile waits for that
 * transaction to end and then reads the counters as it left them, so no
 * turn is given twice.  Rows missing (a dealer's first tie of the brand)
 * are inserted first, in the same order.  The dealer locator, route(),
 * simulate_routing and coverage read the counters without taking a turn.
 * The counters are read and written as the extension's owner: whoever may
 * insert a lead or ask the locator (PUBLIC) may see the turns' outcome,
 * but needs no rights on the table.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "kept_plan.h"
#include "owner.h"
#include "search_path.h"
#include "ties.h"

static const char *const read_sql =
	"SELECT t.dealer_number, t.leads, t.last_at FROM aimroute.tie_turns t"
	" WHERE t.brand_code = $1 AND t.dealer_number = ANY ($2)";
static const char *const lock_sql =
	"SELECT t.dealer_number, t.leads, t.last_at FROM aimroute.tie_turns t"
	" WHERE t.brand_code = $1 AND t.dealer_number = ANY ($2)"
	" ORDER BY t.dealer_number COLLATE \"C\" FOR UPDATE";
static const char *const add_sql =
	"INSERT INTO aimroute.tie_turns (brand_code, dealer_number)"
	" SELECT $1, d FROM pg_catalog.unnest($2) d ORDER BY d COLLATE \"C\""
	" ON CONFLICT DO NOTHING";
static const char *const take_sql = "UPDATE aimroute.tie_turns SET leads = leads + 1,"
									" last_at = pg_catalog.clock_timestamp()"
									" WHERE brand_code = $1 AND dealer_number = $2";

static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr add_plan = NULL;
static SPIPlanPtr take_plan = NULL;

static int ReadTurns(SPIPlanPtr plan, Datum *args, bool read_only, const char *const *dealers,
					 int n, TieTurn *turns);
static bool TurnFirst(const TieTurn *a, const TieTurn *b);

/*
 * TieChoose returns which of n tied dealers (numbers in byte order) has the
 * turn for a lead of a brand, and fills turns with each one's counters as
 * they were; with take, the lead takes the turn: the winner's counter
 * counts it, in the current transaction.
 */
int
TieChoose(const char *brand, const char *const *dealers, int n, bool take, TieTurn *turns)
{
	Oid types[2] = { TEXTOID, TEXTARRAYOID };
	Datum *elems = palloc(sizeof(Datum) * n);
	Datum args[2];
	OwnerSwitch owner;
	int pinned;
	int found;
	int winner = 0;

	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(dealers[i]);
	args[0] = CStringGetTextDatum(brand);
	args[1] = PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));

	pinned = SpiConnectPinned();
	BecomeExtensionOwner(&owner);
	if (!take)
		(void) ReadTurns(KeptPlan(&read_plan, read_sql, 2, types, 0), args, true, dealers, n,
						 turns);
	else
	{
		found =
			ReadTurns(KeptPlan(&lock_plan, lock_sql, 2, types, 0), args, false, dealers, n, turns);
		if (found < n)
		{
			if (SPI_execute_plan(KeptPlan(&add_plan, add_sql, 2, types, 0), args, NULL, false, 0) !=
				SPI_OK_INSERT)
				elog(ERROR, "could not add the round robin counters of brand %s", brand);
			(void) ReadTurns(lock_plan, args, false, dealers, n, turns);
		}
	}
	for (int i = 1; i < n; i++)
		if (TurnFirst(&turns[i], &turns[winner]))
			winner = i;
	if (take)
	{
		Oid take_types[2] = { TEXTOID, TEXTOID };
		Datum take_args[2] = { args[0], elems[winner] };

		if (SPI_execute_plan(KeptPlan(&take_plan, take_sql, 2, take_types, 0), take_args, NULL,
							 false, 0) != SPI_OK_UPDATE ||
			SPI_processed != 1)
			elog(ERROR, "could not count the round robin turn of dealer %s", dealers[winner]);
	}
	RestoreCaller(&owner);
	SpiFinishPinned(pinned);
	return winner;
}

/*
 * ReadTurns runs a query of the counters and fills turns (none yet for a
 * dealer without a row); returns how many rows it found.
 */
static int
ReadTurns(SPIPlanPtr plan, Datum *args, bool read_only, const char *const *dealers, int n,
		  TieTurn *turns)
{
	int rc = SPI_execute_plan(plan, args, NULL, read_only, 0);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the round robin counters: %s", SPI_result_code_string(rc));
	memset(turns, 0, sizeof(TieTurn) * n);
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		HeapTuple tuple = SPI_tuptable->vals[row];
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool isnull;
		char *dealer = TextDatumGetCString(SPI_getbinval(tuple, desc, 1, &isnull));

		for (int i = 0; i < n; i++)
			if (strcmp(dealers[i], dealer) == 0)
			{
				bool never;
				Datum last = SPI_getbinval(tuple, desc, 3, &never);

				turns[i].leads = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
				turns[i].had_turn = !never;
				turns[i].last_at = never ? 0 : DatumGetTimestampTz(last);
			}
	}
	return (int) SPI_processed;
}

/*
 * TurnFirst tells whether a dealer's turn comes before another's: fewer
 * leads by turn, then no turn yet, then the last turn longer ago; a tie of
 * those goes to the earlier dealer of the list (the lower number).
 */
static bool
TurnFirst(const TieTurn *a, const TieTurn *b)
{
	if (a->leads != b->leads)
		return a->leads < b->leads;
	if (a->had_turn != b->had_turn)
		return !a->had_turn;
	return a->had_turn && a->last_at < b->last_at;
}
