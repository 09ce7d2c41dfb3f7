/*
 * opening_hours.c
 *		Dealers' business hours and the re-route deadline that counts them.
 *
 * dealers.business_hours is written in OpenStreetMap's opening_hours
 * syntax, of which this file reads a common subset:
 *
 *	rules		rule [; rule]...		a later rule replaces the hours of the
 *										days it names
 *	rule		24/7
 *				[days] times | [days] off | [days] closed | days
 *	days		day[-day] [, day[-day]]...	Mo Tu We Th Fr Sa Su; Fr-Mo wraps
 *	times		HH:MM-HH:MM [, HH:MM-HH:MM]...	00:00 to 24:00, start before end
 *
 * A rule without days names every day; days without times are open all
 * day.  Overlapping ranges of one day are merged.  Everything else of the
 * OSM syntax (public and school holidays, months, weeks, years, sun times,
 * open ends, comments, fallback rules, ranges past midnight) is refused
 * with the character and the text of the token where it starts.
 *
 * BusinessHoursDeadline walks the dealer's local calendar from the moment
 * of assignment and counts the open time of each range as elapsed time
 * (an hour lost or gained by a change of summer time is lost or gained).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "opening_hours.h"
#include "reroute.h"

#define MINUTES_PER_DAY 1440

/* One rule being read: the days it names and its ranges. */
typedef struct Rule
{
	bool days[8];
	int nranges;
	int16 start[OPENING_HOURS_MAX_RANGES];
	int16 end[OPENING_HOURS_MAX_RANGES];
} Rule;

static const char *const weekday_names[8] = { NULL, "Mo", "Tu", "We", "Th", "Fr", "Sa", "Su" };

static int Weekday(const char *s);
static bool IsLetter(char c);
static bool Refuse(const char *value, const char *at, const char *reason, OpeningHoursError *err);
static const char *UnsupportedReason(const char *at);
static bool ReadTime(const char *value, const char **p, bool end, int *minutes,
					 OpeningHoursError *err);
static void SkipSpace(const char **p);
static void MergeDay(OpeningHours *oh, int day, const Rule *rule);

PG_FUNCTION_INFO_V1(aimroute_business_hours_valid);
PG_FUNCTION_INFO_V1(aimroute_business_hours_deadline);

/*
 * IsLetter tells whether c is an ASCII letter.
 */
static bool
IsLetter(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/*
 * Weekday is the ISO weekday whose two-letter name starts s (and is not
 * the start of a longer word), 0 for none.
 */
static int
Weekday(const char *s)
{
	for (int d = 1; d <= 7; d++)
		if (s[0] == weekday_names[d][0] && s[1] == weekday_names[d][1] && !IsLetter(s[2]))
			return d;
	return 0;
}

/*
 * SkipSpace moves *p over spaces and tabs.
 */
static void
SkipSpace(const char **p)
{
	while (**p == ' ' || **p == '\t')
		(*p)++;
}

/*
 * Refuse fills err for the token that starts at at; returns false.
 */
static bool
Refuse(const char *value, const char *at, const char *reason, OpeningHoursError *err)
{
	const char *stop = at;
	int len;

	/* The token: up to the next space, comma or semicolon, at least a character. */
	while (*stop != '\0' && *stop != ' ' && *stop != '\t' && *stop != ',' && *stop != ';')
		stop++;
	if (stop == at && *stop != '\0')
		stop += pg_mblen(stop);
	len = pg_mbcliplen(at, stop - at, sizeof(err->token) - 1);
	memcpy(err->token, at, len);
	err->token[len] = '\0';
	err->position = pg_mbstrlen_with_len(value, at - value) + 1;
	err->reason = reason;
	return false;
}

/*
 * UnsupportedReason says why the token at at is refused: a part of the OSM
 * syntax aimroute does not read, or a general expectation.
 */
static const char *
UnsupportedReason(const char *at)
{
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
										  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	static const char *const sun[] = { "sunrise", "sunset", "dawn", "dusk" };
	static const char *const day_words[] = { "mo", "tu", "we", "th", "fr", "sa", "su" };
	int n = 0;

	while (IsLetter(at[n]))
		n++;
	if ((n == 2 && (strncmp(at, "PH", 2) == 0 || strncmp(at, "SH", 2) == 0)))
		return "public and school holidays (PH, SH) are not supported";
	for (int i = 0; i < (int) lengthof(months); i++)
		if (n == 3 && strncmp(at, months[i], 3) == 0)
			return "months are not supported";
	if (n == 4 && strncmp(at, "week", 4) == 0)
		return "week numbers are not supported";
	for (int i = 0; i < (int) lengthof(sun); i++)
		if (n == (int) strlen(sun[i]) && strncmp(at, sun[i], n) == 0)
			return "times of sunrise and sunset are not supported";
	if (n >= 2)
		for (int i = 0; i < (int) lengthof(day_words); i++)
			if (pg_strncasecmp(at, day_words[i], 2) == 0)
				return "weekdays are written with two letters: Mo, Tu, We, Th, Fr, Sa, Su";
	if (*at == '"')
		return "comments are not supported";
	if (*at == '|')
		return "fallback rules (||) are not supported";
	if (*at == '[')
		return "the nth weekday of a month is not supported";
	if (*at == '+')
		return "open ends (+) are not supported";
	if (isdigit((unsigned char) at[0]) && isdigit((unsigned char) at[1]) &&
		isdigit((unsigned char) at[2]) && isdigit((unsigned char) at[3]))
		return "years are not supported";
	if (*at == '\0')
		return "the value ends where a weekday, a time range, off or 24/7 was expected";
	return "expected a weekday (Mo to Su), a time range (08:00-18:00), off or 24/7";
}

/*
 * ReadTime reads HH:MM at *p into minutes after midnight; 24:00 only as
 * the end of a range.
 */
static bool
ReadTime(const char *value, const char **p, bool end, int *minutes, OpeningHoursError *err)
{
	const char *s = *p;
	int h, m;

	if (!isdigit((unsigned char) s[0]) || !isdigit((unsigned char) s[1]) || s[2] != ':' ||
		!isdigit((unsigned char) s[3]) || !isdigit((unsigned char) s[4]) ||
		isdigit((unsigned char) s[5]))
	{
		if (isdigit((unsigned char) s[0]))
			return Refuse(value, s,
						  isdigit((unsigned char) s[1]) && isdigit((unsigned char) s[2]) &&
								  isdigit((unsigned char) s[3])
							  ? "years are not supported"
							  : "a time is written HH:MM with two digits each, such as 08:00",
						  err);
		return Refuse(value, s, UnsupportedReason(s), err);
	}
	h = (s[0] - '0') * 10 + (s[1] - '0');
	m = (s[3] - '0') * 10 + (s[4] - '0');
	if (h > 24 || m > 59 || (h == 24 && m != 0))
		return Refuse(value, s, "not a time of day: hours are 00 to 24, minutes 00 to 59", err);
	if (h == 24 && !end)
		return Refuse(value, s, "24:00 can only end a range", err);
	*minutes = h * 60 + m;
	*p = s + 5;
	return true;
}

/*
 * MergeDay replaces the ranges of day by rule's, sorted and with overlaps
 * and adjacent ranges merged.
 */
static void
MergeDay(OpeningHours *oh, int day, const Rule *rule)
{
	int16 start[OPENING_HOURS_MAX_RANGES];
	int16 end[OPENING_HOURS_MAX_RANGES];
	int n = rule->nranges;

	memcpy(start, rule->start, sizeof(start));
	memcpy(end, rule->end, sizeof(end));
	/* Insertion sort by start: a handful of ranges. */
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && start[j] < start[j - 1]; j--)
		{
			int16 s = start[j], e = end[j];

			start[j] = start[j - 1];
			end[j] = end[j - 1];
			start[j - 1] = s;
			end[j - 1] = e;
		}
	oh->nranges[day] = 0;
	for (int i = 0; i < n; i++)
	{
		int k = oh->nranges[day];

		if (k > 0 && start[i] <= oh->end[day][k - 1])
			oh->end[day][k - 1] = Max(oh->end[day][k - 1], end[i]);
		else
		{
			oh->start[day][k] = start[i];
			oh->end[day][k] = end[i];
			oh->nranges[day]++;
		}
	}
}

/*
 * OpeningHoursParse reads value into oh; on a value it refuses, fills err
 * and returns false.
 */
bool
OpeningHoursParse(const char *value, OpeningHours *oh, OpeningHoursError *err)
{
	const char *p = value;

	memset(oh, 0, sizeof(*oh));
	memset(err, 0, sizeof(*err));
	SkipSpace(&p);
	if (*p == '\0')
		return Refuse(value, p, "the value is empty: NULL means no business hours", err);
	for (;;)
	{
		Rule rule;
		bool named = false;

		memset(&rule, 0, sizeof(rule));
		SkipSpace(&p);
		if (*p == '\0' || *p == ';')
			return Refuse(value, p, "a rule is missing before or after a semicolon", err);
		if (strncmp(p, "24/7", 4) == 0)
		{
			p += 4;
			for (int d = 1; d <= 7; d++)
				rule.days[d] = true;
			rule.nranges = 1;
			rule.start[0] = 0;
			rule.end[0] = MINUTES_PER_DAY;
		}
		else
		{
			/* The days it names, if any. */
			while (Weekday(p) != 0)
			{
				int from = Weekday(p);
				int to = from;

				p += 2;
				SkipSpace(&p);
				if (*p == '-')
				{
					p++;
					SkipSpace(&p);
					to = Weekday(p);
					if (to == 0)
						return Refuse(value, p, "a weekday range ends with a weekday, as in Mo-Fr",
									  err);
					p += 2;
					SkipSpace(&p);
				}
				for (int d = from;; d = d % 7 + 1)
				{
					rule.days[d] = true;
					if (d == to)
						break;
				}
				named = true;
				if (*p == ',')
				{
					const char *after = p + 1;

					SkipSpace(&after);
					if (Weekday(after) == 0)
						return Refuse(value, after, "a weekday is expected after a comma", err);
					p = after;
				}
			}
			if (!named)
				for (int d = 1; d <= 7; d++)
					rule.days[d] = true;
			SkipSpace(&p);

			if (*p == '\0' || *p == ';')
			{
				/* Days alone: open all day (named is true: the rule is not empty). */
				rule.nranges = 1;
				rule.start[0] = 0;
				rule.end[0] = MINUTES_PER_DAY;
			}
			else if ((strncmp(p, "off", 3) == 0 && !IsLetter(p[3])) ||
					 (strncmp(p, "closed", 6) == 0 && !IsLetter(p[6])))
				p += p[0] == 'o' ? 3 : 6;
			else if (isdigit((unsigned char) *p))
			{
				for (;;)
				{
					const char *range = p;
					int s, e;

					if (!ReadTime(value, &p, false, &s, err))
						return false;
					SkipSpace(&p);
					if (*p != '-')
						return Refuse(value, p,
									  *p == '+' ? "open ends (+) are not supported"
												: "a time range is written HH:MM-HH:MM, such as "
												  "08:00-18:00",
									  err);
					p++;
					SkipSpace(&p);
					if (!ReadTime(value, &p, true, &e, err))
						return false;
					if (*p == '+')
						return Refuse(value, p, "open ends (+) are not supported", err);
					if (e <= s)
						return Refuse(value, range,
									  "a range must end after it starts: ranges past midnight are "
									  "not supported",
									  err);
					if (rule.nranges == OPENING_HOURS_MAX_RANGES)
						return Refuse(value, range, "too many time ranges in one rule", err);
					rule.start[rule.nranges] = s;
					rule.end[rule.nranges] = e;
					rule.nranges++;
					SkipSpace(&p);
					if (*p != ',')
						break;
					p++;
					SkipSpace(&p);
					if (Weekday(p) != 0)
						return Refuse(value, p,
									  "rules are separated by semicolons, not commas (the OSM "
									  "additional rule is not supported)",
									  err);
				}
			}
			else
				return Refuse(value, p, UnsupportedReason(p), err);
		}

		for (int d = 1; d <= 7; d++)
			if (rule.days[d])
				MergeDay(oh, d, &rule);
		SkipSpace(&p);
		if (*p == '\0')
			return true;
		if (*p != ';')
			return Refuse(value, p,
						  *p == ','
							  ? "rules are separated by semicolons, not commas"
							  : "a semicolon or the end of the value is expected after a rule",
						  err);
		p++;
		SkipSpace(&p);
		if (*p == '\0')
			return true; /* a trailing semicolon */
	}
}

/*
 * OpeningHoursParseOrError reads value into oh or raises the error a user
 * sees for a bad dealers.business_hours.
 */
void
OpeningHoursParseOrError(const char *value, OpeningHours *oh)
{
	OpeningHoursError err;

	if (!OpeningHoursParse(value, oh, &err))
		ereport(
			ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 err.token[0] != '\0'
				 ? errmsg("invalid business hours at character %d: \"%s\"", err.position, err.token)
				 : errmsg("invalid business hours: unexpected end at character %d", err.position),
			 errdetail("In \"%s\": %s.", value, err.reason),
			 errhint("Write OpenStreetMap opening_hours rules separated by semicolons, such "
					 "as \"Mo-Fr 08:00-12:00,13:00-18:00; Sa 09:00-13:00; Su off\", or "
					 "\"24/7\".")));
}

/*
 * LocalInstant is the timestamptz of minutes after local midnight of the
 * Julian day jd in zone tz; PostgreSQL's rule resolves a local time that
 * a change of summer time skips or repeats.
 */
static TimestampTz
LocalInstant(int jd, int minutes, pg_tz *tz)
{
	struct pg_tm tm;
	int offset;
	TimestampTz t;

	memset(&tm, 0, sizeof(tm));
	jd += minutes / MINUTES_PER_DAY;
	minutes %= MINUTES_PER_DAY;
	j2date(jd, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	tm.tm_hour = minutes / 60;
	tm.tm_min = minutes % 60;
	offset = DetermineTimeZoneOffset(&tm, tz);
	if (tm2timestamp(&tm, 0, &offset, &t) != 0)
		ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						errmsg("re-route deadline out of range")));
	return t;
}

/*
 * OpenTimeOf is the open time, in microseconds, that reroute_after asks
 * for: days of 24 hours and months of 30 days, as extract(epoch from
 * interval) counts them.
 */
int64
OpenTimeOf(const Interval *after)
{
	int64 usecs;

	if (pg_mul_s64_overflow((int64) after->month * DAYS_PER_MONTH + after->day, USECS_PER_DAY,
							&usecs) ||
		pg_add_s64_overflow(usecs, after->time, &usecs))
		ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						errmsg("re-route deadline out of range")));
	if (usecs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("reroute_after must not be negative"),
				 errhint("Give the open time a dealer has to view a lead, such as '4 hours'.")));
	return usecs;
}

/*
 * BusinessHoursDeadline sets *due to the moment open_usecs of open time
 * (oh, in zone tz, no time on the ISO weekdays of skip_days) have passed
 * since from; returns false, leaving *due alone, when no day is open.
 */
bool
BusinessHoursDeadline(const OpeningHours *oh, pg_tz *tz, uint8 skip_days, TimestampTz from,
					  int64 open_usecs, TimestampTz *due)
{
	struct pg_tm tm;
	fsec_t fsec;
	int offset;
	int jd;
	int64 remaining = open_usecs;
	bool any = false;

	for (int d = 1; d <= 7; d++)
		any |= (skip_days & (1 << d)) == 0 && oh->nranges[d] > 0;
	if (!any)
		return false;
	if (TIMESTAMP_NOT_FINITE(from))
	{
		*due = from;
		return true;
	}
	if (timestamp2tm(from, &offset, &tm, &fsec, NULL, tz) != 0)
		ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						errmsg("re-route deadline out of range")));
	jd = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
	for (;; jd++)
	{
		int wd = j2day(jd);
		int iso = wd == 0 ? 7 : wd;

		CHECK_FOR_INTERRUPTS();
		if (skip_days & (1 << iso))
			continue;
		for (int i = 0; i < oh->nranges[iso]; i++)
		{
			TimestampTz start = LocalInstant(jd, oh->start[iso][i], tz);
			TimestampTz end = LocalInstant(jd, oh->end[iso][i], tz);

			if (start < from)
				start = from;
			if (end <= start)
				continue;
			if (remaining <= end - start)
			{
				*due = start + remaining;
				return true;
			}
			remaining -= end - start;
		}
	}
}

/*
 * aimroute_business_hours_valid is the SQL function
 * aimroute.business_hours_valid(text): true, or the error that says what
 * is wrong with the value and where.
 */
Datum
aimroute_business_hours_valid(PG_FUNCTION_ARGS)
{
	OpeningHours oh;

	OpeningHoursParseOrError(text_to_cstring(PG_GETARG_TEXT_PP(0)), &oh);
	PG_RETURN_BOOL(true);
}

/*
 * aimroute_business_hours_deadline is the SQL function
 * aimroute.business_hours_deadline(assigned_at, reroute_after,
 * business_hours, timezone, skip_days): NULL when the hours (less the skip
 * days) are never open.
 */
Datum
aimroute_business_hours_deadline(PG_FUNCTION_ARGS)
{
	TimestampTz from = PG_GETARG_TIMESTAMPTZ(0);
	Interval *after = PG_GETARG_INTERVAL_P(1);
	char *hours = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char *zone = text_to_cstring(PG_GETARG_TEXT_PP(3));
	ArrayType *skip = PG_GETARG_ARRAYTYPE_P(4);
	OpeningHours oh;
	pg_tz *tz;
	uint8 mask;
	int64 usecs;
	TimestampTz due;

	OpeningHoursParseOrError(hours, &oh);
	tz = pg_tzset(zone);
	if (tz == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("time zone \"%s\" not recognized", zone),
						errhint("Use a name from pg_timezone_names, such as America/Chicago.")));
	mask = SkipDaysMask(skip);
	usecs = OpenTimeOf(after);
	if (!BusinessHoursDeadline(&oh, tz, mask, from, usecs, &due))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(due);
}
