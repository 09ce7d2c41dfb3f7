/*
 * caps.c
 *		Daily lead caps (dealers.daily_lead_cap): whether a capped dealer may
 *		take one more lead on the day a lead was received (in the OEM's time
 *		zone, settings.timezone), from aimroute.daily_lead_counts, and
 *		counting the lead.
 *
 * Routing asks only about a dealer a rule chose that has a cap, so dealers
 * without one cost nothing.  A new lead counts itself with one UPDATE that
 * adds one only while the count is below the cap: a session counting the
 * same dealer and day meanwhile holds the row, and the UPDATE waits for
 * its transaction and checks the count it left (READ COMMITTED), so two
 * sessions never both take the last place.  The day's first lead inserts
 * the row (ON CONFLICT DO NOTHING, then the UPDATE again when another
 * session inserted it first).  A count at the cap is not locked: sessions
 * that find a dealer full do not wait for each other.  route(), the
 * locator, re-routes and simulations read the count without counting.
 * The counts are read and written as the extension's owner, as ties.c does.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "caps.h"
#include "kept_plan.h"
#include "owner.h"
#include "search_path.h"

static const char *const read_sql = "SELECT c.leads FROM aimroute.daily_lead_counts c"
									" WHERE c.dealer_number = $1 AND c.day = $2::date";
static const char *const bump_sql = "UPDATE aimroute.daily_lead_counts SET leads = leads + 1"
									" WHERE dealer_number = $1 AND day = $2::date AND leads < $3";
static const char *const add_sql =
	"INSERT INTO aimroute.daily_lead_counts (dealer_number, day, leads)"
	" VALUES ($1, $2::date, 1) ON CONFLICT DO NOTHING";

static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr bump_plan = NULL;
static SPIPlanPtr add_plan = NULL;

/*
 * LocalDay returns the day (YYYY-MM-DD) an instant falls on in a time zone
 * (the OEM's, settings.timezone, as routing read it with its model: NULL
 * when not recognized, then UTC).  A lead received at infinity or
 * -infinity counts on the day of its transaction.
 */
static char *
LocalDay(TimestampTz at, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t fsec;
	int offset;

	if (TIMESTAMP_NOT_FINITE(at))
		at = GetCurrentTransactionStartTimestamp();
	if (timestamp2tm(at, &offset, &tm, &fsec, NULL, tz != NULL ? tz : pg_tzset("UTC")) != 0)
		ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						errmsg("timestamp out of range for a daily lead count")));
	return psprintf("%04d-%02d-%02d", tm.tm_year, tm.tm_mon, tm.tm_mday);
}

/*
 * CapRoom tells whether a dealer with a daily cap may take a lead received
 * at an instant, and sets *day to that day (YYYY-MM-DD, in the time zone
 * tz: the OEM's); with take, a lead that fits is counted in the current
 * transaction.
 */
bool
CapRoom(const char *dealer, int cap, TimestampTz received, pg_tz *tz, bool take, char **day)
{
	Oid types[3] = { TEXTOID, TEXTOID, INT4OID };
	Datum args[3];
	OwnerSwitch owner;
	int pinned;
	bool room;
	bool isnull;

	*day = LocalDay(received, tz);
	pinned = SpiConnectPinned();
	BecomeExtensionOwner(&owner);
	args[1] = CStringGetTextDatum(*day);
	args[0] = CStringGetTextDatum(dealer);
	args[2] = Int32GetDatum(cap);
	if (!take)
	{
		if (SPI_execute_plan(KeptPlan(&read_plan, read_sql, 2, types, 0), args, NULL, true, 1) !=
			SPI_OK_SELECT)
			elog(ERROR, "could not read the daily lead count of dealer %s", dealer);
		room = SPI_processed == 0 ||
			   DatumGetInt32(
				   SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) < cap;
	}
	else
	{
		SPIPlanPtr bump = KeptPlan(&bump_plan, bump_sql, 3, types, 0);

		if (SPI_execute_plan(bump, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not count the lead of dealer %s", dealer);
		room = SPI_processed == 1;
		if (!room)
		{
			if (SPI_execute_plan(KeptPlan(&add_plan, add_sql, 2, types, 0), args, NULL, false, 0) !=
				SPI_OK_INSERT)
				elog(ERROR, "could not add the daily lead count of dealer %s", dealer);
			room = SPI_processed == 1;
		}
		if (!room)
		{
			/* Another session added the row first: count in it, if there is room. */
			if (SPI_execute_plan(bump, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not count the lead of dealer %s", dealer);
			room = SPI_processed == 1;
		}
	}
	RestoreCaller(&owner);
	SpiFinishPinned(pinned);
	return room;
}
