/*
 * reroute.c
 *		When a dealer's hold on an unviewed lead ends.
 *
 * A routed lead is due for re-routing reroute_after after it was assigned.
 * The interval is added the way PostgreSQL adds an interval to a
 * timestamptz, but in the OEM's time zone (settings.timezone) rather than
 * the session's: months and days move the local calendar date and keep the
 * local time of day, hours and smaller parts are elapsed time.  When the
 * deadline lands on a skipped ISO weekday in that zone, it moves to the
 * same local time on the next day that is not skipped.  A local time that
 * does not exist on that day (the gap of a change to summer time) or exists
 * twice (the change back) is resolved by PostgreSQL's own rule, as
 * '... 02:30'::timestamp AT TIME ZONE settings.timezone would be.
 *
 * With settings.reroute_clock = 'business_hours', reroute_after counts
 * only the open time of the dealer holding the lead (dealers.business_hours
 * in dealers.timezone, or settings.timezone; opening_hours.c), skip days
 * counting none.  A dealer without business hours, or whose hours are never
 * open on a day that is not skipped, keeps the elapsed clock above.
 *
 * A view ends the hold: aimroute.mark_viewed records one.  Only aimroute
 * writes a lead's view and deadline (schema/040_leads.sql), so the view
 * is recorded as the extension's owner, once the lead has been read with
 * the caller's rights and the viewer checked: a region or dealer user
 * names only its own address (aimroute.user_scopes.email).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"
#include "access/htup_details.h"

#include "catalog.h"
#include "kept_plan.h"
#include "model.h"
#include "opening_hours.h"
#include "owner.h"
#include "reroute.h"
#include "search_path.h"

/*
 * Recording a view (mark_viewed).  The function's search_path is pinned
 * to pg_catalog, pg_temp (its SET clause, and SpiConnectPinned), under
 * which these statements are prepared.
 * $1 lead, $2 the dealer holding it, $3 the viewer's address, $4 the role
 * whose user_scopes.email the address must be (NULL: any address).
 */
static const char *const view_record_sql =
	"WITH v AS ("
	"  SELECT EXISTS (SELECT FROM aimroute.dealer_contacts c"
	"                  WHERE c.dealer_number = $2"
	"                    AND lower(c.email) = lower(btrim($3))"
	"                    AND 'Leads: Emails To' = ANY (c.contact_types))"
	"         AND ($4 IS NULL"
	"              OR EXISTS (SELECT FROM aimroute.user_scopes u"
	"                          WHERE u.role_name = $4 AND lower(u.email) = lower(btrim($3))))"
	"         AS allowed),"
	" u AS ("
	"  UPDATE aimroute.leads l"
	"     SET viewed_at = clock_timestamp(), viewed_by = lower(btrim($3)), reroute_due_at = NULL"
	"    FROM v WHERE v.allowed AND l.lead_id = $1 AND l.viewed_at IS NULL"
	"  RETURNING l.lead_id)"
	" SELECT v.allowed FROM v";
static SPIPlanPtr view_record_plan = NULL;
static Oid view_record_types[4] = { INT8OID, TEXTOID, TEXTOID, NAMEOID };

/* A dealer's business hours and time zone (RerouteDeadlineFor). */
static SPIPlanPtr dealer_hours_plan = NULL;

/*
 * settings.reroute_clock, read once per state of the configuration (the
 * routing model's key): the model itself does not carry it, and a library
 * of this version may run on the schema of an older one (before ALTER
 * EXTENSION UPDATE), which has no such column.
 */
static struct
{
	bool valid;
	ModelKey key;
	bool business_hours;
} clock_cache;

static SPIPlanPtr holder_plan = NULL;
static SPIPlanPtr holder_lock_plan = NULL;

static bool BusinessHoursClock(void);
static char *LeadHolder(int64 lead_id, bool lock);
static bool ActsForAimroute(Oid role);

PG_FUNCTION_INFO_V1(aimroute_mark_viewed);
PG_FUNCTION_INFO_V1(aimroute_reroute_deadline);

/*
 * SkipDaysMask turns an int[] of ISO weekdays into RerouteSettings'
 * bitmask, refusing anything but 1 to 7.
 */
uint8
SkipDaysMask(ArrayType *days)
{
	Datum *elems;
	bool *nulls;
	int n;
	uint8 mask = 0;

	deconstruct_array(days, INT4OID, sizeof(int32), true, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		int32 d = nulls[i] ? 0 : DatumGetInt32(elems[i]);

		if (d < 1 || d > 7)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid skip day %s", nulls[i] ? "NULL" : psprintf("%d", d)),
					 errhint("Skip days are ISO weekday numbers, 1 (Monday) to 7 (Sunday).")));
		mask |= (uint8) (1 << d);
	}
	if (mask == 0xFE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("every weekday is a skip day"),
				 errhint("Leave at least one weekday out of the skip days.")));
	return mask;
}

/*
 * ReadRerouteSettings reads REROUTE_SETTINGS_COLUMNS, starting at column
 * first of a settings row.
 */
void
ReadRerouteSettings(HeapTuple row, TupleDesc desc, int first, RerouteSettings *s)
{
	bool isnull;
	Datum d;

	memset(s, 0, sizeof(*s));
	d = heap_getattr(row, first, desc, &isnull);
	s->enabled = !isnull && DatumGetBool(d);
	d = heap_getattr(row, first + 1, desc, &isnull);
	if (!isnull)
		s->after = *DatumGetIntervalP(d);
	d = heap_getattr(row, first + 2, desc, &isnull);
	if (!isnull)
		s->skip_days = SkipDaysMask(DatumGetArrayTypeP(d));
	d = heap_getattr(row, first + 3, desc, &isnull);
	strlcpy(s->timezone, isnull ? "UTC" : TextDatumGetCString(d), sizeof(s->timezone));
	/* pg_tzset's zones live as long as the backend: keep the pointer. */
	s->tz = pg_tzset(s->timezone);
}

/*
 * ToLocal breaks a timestamptz down into local time in zone tz.
 */
static void
ToLocal(TimestampTz t, pg_tz *tz, struct pg_tm *tm, fsec_t *fsec)
{
	int offset;

	if (timestamp2tm(t, &offset, tm, fsec, NULL, tz) != 0)
		ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						errmsg("re-route deadline out of range")));
}

/*
 * FromLocal is the timestamptz of a local time in zone tz.
 */
static TimestampTz
FromLocal(struct pg_tm *tm, fsec_t fsec, pg_tz *tz)
{
	int offset = DetermineTimeZoneOffset(tm, tz);
	TimestampTz t;

	if (tm2timestamp(tm, fsec, &offset, &t) != 0)
		ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						errmsg("re-route deadline out of range")));
	return t;
}

/*
 * AddDays moves a local date by days calendar days.
 */
static void
AddDays(struct pg_tm *tm, int days)
{
	j2date(date2j(tm->tm_year, tm->tm_mon, tm->tm_mday) + days, &tm->tm_year, &tm->tm_mon,
		   &tm->tm_mday);
}

/*
 * IsoWeekday is the ISO weekday (1 = Monday .. 7 = Sunday) of a local date.
 */
static int
IsoWeekday(const struct pg_tm *tm)
{
	int d = j2day(date2j(tm->tm_year, tm->tm_mon, tm->tm_mday));

	return d == 0 ? 7 : d;
}

/*
 * RerouteDeadline is the re-route deadline of a lead assigned at from.
 */
TimestampTz
RerouteDeadline(const RerouteSettings *s, TimestampTz from)
{
	pg_tz *tz = s->tz;
	struct pg_tm tm;
	fsec_t fsec;
	TimestampTz due = from;

	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" not recognized", s->timezone),
				 errhint("Set aimroute.settings.timezone to a name from pg_timezone_names.")));
	if (TIMESTAMP_NOT_FINITE(from))
		return from;

	if (s->after.month != 0 || s->after.day != 0)
	{
		ToLocal(due, tz, &tm, &fsec);
		if (s->after.month != 0)
		{
			int months = tm.tm_year * MONTHS_PER_YEAR + (tm.tm_mon - 1) + s->after.month;

			tm.tm_year = months / MONTHS_PER_YEAR;
			tm.tm_mon = months % MONTHS_PER_YEAR + 1;
			tm.tm_mday = Min(tm.tm_mday, day_tab[isleap(tm.tm_year)][tm.tm_mon - 1]);
		}
		AddDays(&tm, s->after.day);
		due = FromLocal(&tm, fsec, tz);
	}
	due += s->after.time;

	ToLocal(due, tz, &tm, &fsec);
	if ((s->skip_days & (1 << IsoWeekday(&tm))) == 0)
		return due;
	/* At most six skipped days in a row: SkipDaysMask refuses all seven. */
	for (int i = 0; i < 7 && (s->skip_days & (1 << IsoWeekday(&tm))) != 0; i++)
		AddDays(&tm, 1);
	return FromLocal(&tm, fsec, tz);
}

/*
 * BusinessHoursClock tells whether settings.reroute_clock is
 * 'business_hours' in the configuration routing reads now.
 */
static bool
BusinessHoursClock(void)
{
	const ModelKey *key = &ModelCurrent()->data->key;
	int pinned;

	if (clock_cache.valid && clock_cache.key.database == key->database &&
		clock_cache.key.relid == key->relid && clock_cache.key.version == key->version &&
		clock_cache.key.xmin == key->xmin)
		return clock_cache.business_hours;

	clock_cache.valid = false;
	clock_cache.business_hours = false;
	if (AimrouteHasColumn("settings", "reroute_clock"))
	{
		pinned = SpiConnectPinned();
		if (SPI_execute("SELECT s.reroute_clock OPERATOR(pg_catalog.=) 'business_hours'"
						" FROM aimroute.settings s",
						true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read aimroute.settings.reroute_clock");
		if (SPI_processed == 1)
		{
			bool isnull;
			Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			clock_cache.business_hours = !isnull && DatumGetBool(d);
		}
		SpiFinishPinned(pinned);
	}
	clock_cache.key = *key;
	clock_cache.valid = true;
	return clock_cache.business_hours;
}

/*
 * RerouteDeadlineFor is the re-route deadline of a lead assigned to dealer
 * dealer_number at from: RerouteDeadline's, or under the business-hours
 * clock the moment reroute_after of the dealer's open time has passed.
 */
TimestampTz
RerouteDeadlineFor(const RerouteSettings *s, const char *dealer_number, TimestampTz from)
{
	Oid type = TEXTOID;
	Datum arg;
	int pinned;
	OpeningHours oh;
	bool has_hours = false;
	pg_tz *tz = s->tz;
	int64 usecs;
	TimestampTz due;

	if (dealer_number == NULL || TIMESTAMP_NOT_FINITE(from) || !BusinessHoursClock())
		return RerouteDeadline(s, from);

	arg = CStringGetTextDatum(dealer_number);
	pinned = SpiConnectPinned();
	if (SPI_execute_plan(KeptPlan(&dealer_hours_plan,
								  "SELECT d.business_hours, d.timezone FROM aimroute.dealers d"
								  " WHERE d.dealer_number OPERATOR(pg_catalog.=) $1",
								  1, &type, 0),
						 &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the business hours of dealer %s", dealer_number);
	if (SPI_processed == 1)
	{
		char *hours = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		char *zone = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

		if (hours != NULL)
		{
			OpeningHoursParseOrError(hours, &oh);
			has_hours = true;
		}
		/* A zone the server no longer knows: the OEM's, as for NULL. */
		if (zone != NULL)
		{
			pg_tz *dealer_tz = pg_tzset(zone);

			if (dealer_tz != NULL)
				tz = dealer_tz;
		}
	}
	SpiFinishPinned(pinned);
	if (!has_hours || tz == NULL)
		return RerouteDeadline(s, from);

	usecs = OpenTimeOf(&s->after);
	if (!BusinessHoursDeadline(&oh, tz, s->skip_days, from, usecs, &due))
		return RerouteDeadline(s, from);
	return due;
}

/*
 * aimroute_reroute_deadline is the SQL function
 * aimroute.reroute_deadline(assigned_at, after, skip_days, timezone).
 */
Datum
aimroute_reroute_deadline(PG_FUNCTION_ARGS)
{
	RerouteSettings s;
	text *zone = PG_GETARG_TEXT_PP(3);

	memset(&s, 0, sizeof(s));
	s.enabled = true;
	s.after = *PG_GETARG_INTERVAL_P(1);
	s.skip_days = SkipDaysMask(PG_GETARG_ARRAYTYPE_P(2));
	text_to_cstring_buffer(zone, s.timezone, sizeof(s.timezone));
	s.tz = pg_tzset(s.timezone);
	PG_RETURN_TIMESTAMPTZ(RerouteDeadline(&s, PG_GETARG_TIMESTAMPTZ(0)));
}

/*
 * LeadHolder returns the dealer holding a lead as the current user sees it
 * (under row-level security), NULL when that user sees no such lead; with
 * lock, after locking its row.  The caller is connected to SPI.
 */
static char *
LeadHolder(int64 lead_id, bool lock)
{
	Oid type = INT8OID;
	Datum arg = Int64GetDatum(lead_id);
	SPIPlanPtr plan;

	plan = lock
			   ? KeptPlan(
					 &holder_lock_plan,
					 "SELECT l.dealer_number FROM aimroute.leads l WHERE l.lead_id = $1 FOR UPDATE",
					 1, &type, 0)
			   : KeptPlan(&holder_plan,
						  "SELECT l.dealer_number FROM aimroute.leads l WHERE l.lead_id = $1", 1,
						  &type, 0);
	/* Not read-only: a new snapshot, which sees the row just locked. */
	if (SPI_execute_plan(plan, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read lead " INT64_FORMAT, lead_id);
	if (SPI_processed != 1)
		return NULL;
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * ActsForAimroute tells whether a role has the rights of aimroute_admin or
 * of the extension's owner (a superuser has every role's): it may record
 * the view of any contact, as a web application does for the person who
 * opened the lead.
 */
static bool
ActsForAimroute(Oid role)
{
	Oid admin = get_role_oid("aimroute_admin", true);
	Oid owner = ExtensionOwner();

	return (OidIsValid(admin) && has_privs_of_role(role, admin)) ||
		   (OidIsValid(owner) && has_privs_of_role(role, owner));
}

/*
 * aimroute_mark_viewed is the SQL function aimroute.mark_viewed(lead_id,
 * viewer_email).  The lead must be one the caller sees, before and after
 * its row is locked (a re-route may have moved it meanwhile); the viewer
 * must be a 'Leads: Emails To' contact of the dealer holding it and, unless
 * the caller acts for aimroute, the caller's own address.  Then the view
 * is recorded as the extension's owner.  Returns whether the view counts;
 * viewing again is harmless.
 */
Datum
aimroute_mark_viewed(PG_FUNCTION_ARGS)
{
	Oid caller = GetUserId();
	int64 lead_id;
	char *seen;
	char *holder = NULL;
	bool allowed = false;
	OwnerSwitch owner;
	int pinned;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	lead_id = PG_GETARG_INT64(0);
	pinned = SpiConnectPinned();
	seen = LeadHolder(lead_id, false);
	if (seen != NULL)
	{
		BecomeExtensionOwner(&owner);
		holder = LeadHolder(lead_id, true);
		RestoreCaller(&owner);
		if (holder != NULL)
			seen = LeadHolder(lead_id, false);
	}
	if (seen != NULL && holder != NULL && strcmp(seen, holder) == 0)
	{
		Datum args[4];
		char nulls[4] = { ' ', ' ', ' ', ' ' };
		bool isnull;

		args[0] = Int64GetDatum(lead_id);
		args[1] = CStringGetTextDatum(holder);
		args[2] = PG_GETARG_DATUM(1);
		if (ActsForAimroute(caller))
		{
			args[3] = (Datum) 0;
			nulls[3] = 'n';
		}
		else
			args[3] =
				DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(caller, false)));
		BecomeExtensionOwner(&owner);
		if (SPI_execute_plan(KeptPlan(&view_record_plan, view_record_sql, 4, view_record_types, 0),
							 args, nulls, false, 0) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not record the view of lead " INT64_FORMAT, lead_id);
		allowed =
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		allowed = allowed && !isnull;
		RestoreCaller(&owner);
	}
	SpiFinishPinned(pinned);
	PG_RETURN_BOOL(allowed);
}
