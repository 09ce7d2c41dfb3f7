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
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"
#include "access/htup_details.h"

#include "reroute.h"

PG_FUNCTION_INFO_V1(aimroute_reroute_deadline);

/*
 * SkipDaysMask turns an int[] of ISO weekdays into RerouteSettings'
 * bitmask, refusing anything but 1 to 7.
 */
static uint8
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
