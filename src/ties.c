/*
 * ties.c
 *		Round robin among equally near dealers (settings.tie_break =
 *		'round_robin'): which of the tied dealers has the turn, from the
 *		counters per brand and dealer of aimroute.tie_turns, and taking it.
 *
 * Routing reads the counters only when it finds a tie.  A new lead takes
 * the turn in its own transaction: the tied dealers' rows are locked
 * (FOR UPDATE, one by one in dealer number order, byte by byte), the
 * dealer with the fewest leads by turn wins, the one whose last turn is the
 * longest ago among equals, the lowest dealer number among those; its row
 * counts the lead.  A session choosing among the same dealers meanwhile
 * waits for that transaction to end and then reads the counters as it left
 * them, so no turn is given twice.  A row missing (a dealer's first tie of
 * the brand) is inserted when its turn to be locked comes, so the order
 * holds.  The dealer locator, route(), simulate_routing and coverage read
 * the counters without taking a turn.
 * The counters are read and written as the extension's owner: whoever may
 * insert a lead or ask the locator (PUBLIC) may see the turns' outcome,
 * but needs no rights on the table.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "kept_plan.h"
#include "owner.h"
#include "search_path.h"
#include "ties.h"

static const char *const read_sql = "SELECT t.leads, t.last_at FROM aimroute.tie_turns t"
									" WHERE t.brand_code = $1 AND t.dealer_number = $2";
static const char *const lock_sql = "SELECT t.leads, t.last_at FROM aimroute.tie_turns t"
									" WHERE t.brand_code = $1 AND t.dealer_number = $2 FOR UPDATE";
static const char *const add_sql =
	"INSERT INTO aimroute.tie_turns (brand_code, dealer_number) VALUES ($1, $2)"
	" ON CONFLICT DO NOTHING";
static const char *const take_sql =
	"UPDATE aimroute.tie_turns SET leads = leads + 1, last_at = pg_catalog.clock_timestamp()"
	" WHERE brand_code = $1 AND dealer_number = $2";

static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr add_plan = NULL;
static SPIPlanPtr take_plan = NULL;

static bool ReadTurn(const char *sql, SPIPlanPtr *plan, Datum *args, bool read_only, TieTurn *turn);
static bool TurnFirst(const TieTurn *a, const TieTurn *b);

/*
 * TieChoose returns which of n tied dealers (numbers in byte order) has the
 * turn for a lead of a brand, and fills turns with each one's counters as
 * they were; with take, the lead takes the turn: the winner's counter
 * counts it, in the current transaction.  Each dealer's row is read by its
 * key, one statement a dealer, so that the plan is the primary key's
 * whatever the size of the table or of the tie.
 */
int
TieChoose(const char *brand, const char *const *dealers, int n, bool take, TieTurn *turns)
{
	Oid types[2] = { TEXTOID, TEXTOID };
	Datum args[2];
	OwnerSwitch owner;
	int pinned;
	int winner = 0;

	args[0] = CStringGetTextDatum(brand);
	pinned = SpiConnectPinned();
	BecomeExtensionOwner(&owner);
	for (int i = 0; i < n; i++)
	{
		args[1] = CStringGetTextDatum(dealers[i]);
		if (!take)
			(void) ReadTurn(read_sql, &read_plan, args, true, &turns[i]);
		else if (!ReadTurn(lock_sql, &lock_plan, args, false, &turns[i]))
		{
			/* The dealer's first tie of the brand: its row, then its lock. */
			if (SPI_execute_plan(KeptPlan(&add_plan, add_sql, 2, types, 0), args, NULL, false, 0) !=
				SPI_OK_INSERT)
				elog(ERROR, "could not add the round robin counter of dealer %s", dealers[i]);
			if (!ReadTurn(lock_sql, &lock_plan, args, false, &turns[i]))
				elog(ERROR, "the round robin counter of dealer %s is missing", dealers[i]);
		}
		if (i > 0 && TurnFirst(&turns[i], &turns[winner]))
			winner = i;
	}
	if (take)
	{
		args[1] = CStringGetTextDatum(dealers[winner]);
		if (SPI_execute_plan(KeptPlan(&take_plan, take_sql, 2, types, 0), args, NULL, false, 0) !=
				SPI_OK_UPDATE ||
			SPI_processed != 1)
			elog(ERROR, "could not count the round robin turn of dealer %s", dealers[winner]);
	}
	RestoreCaller(&owner);
	SpiFinishPinned(pinned);
	return winner;
}

/*
 * ReadTurn reads one dealer's counters (none yet without a row); returns
 * whether it has a row.
 */
static bool
ReadTurn(const char *sql, SPIPlanPtr *plan, Datum *args, bool read_only, TieTurn *turn)
{
	Oid types[2] = { TEXTOID, TEXTOID };
	int rc = SPI_execute_plan(KeptPlan(plan, sql, 2, types, 0), args, NULL, read_only, 1);
	HeapTuple tuple;
	bool isnull;
	bool never;
	Datum last;

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the round robin counters: %s", SPI_result_code_string(rc));
	memset(turn, 0, sizeof(TieTurn));
	if (SPI_processed == 0)
		return false;
	tuple = SPI_tuptable->vals[0];
	turn->leads = DatumGetInt64(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 1, &isnull));
	last = SPI_getbinval(tuple, SPI_tuptable->tupdesc, 2, &never);
	turn->had_turn = !never;
	turn->last_at = never ? 0 : DatumGetTimestampTz(last);
	return true;
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
