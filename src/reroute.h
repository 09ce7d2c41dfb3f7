/*
 * reroute.h
 *		When a dealer's hold on an unviewed lead ends.
 */
#ifndef AIMROUTE_REROUTE_H
#define AIMROUTE_REROUTE_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "pgtime.h"
#include "utils/array.h"

/* The re-route settings of aimroute.settings. */
typedef struct RerouteSettings
{
	bool enabled;
	Interval after;
	uint8 skip_days; /* bit d set: ISO weekday d (1 = Monday) is skipped */
	char timezone[TZ_STRLEN_MAX + 1];
	pg_tz *tz; /* timezone, looked up once; NULL when not recognized */
} RerouteSettings;

/* The columns ReadRerouteSettings reads, in this order. */
#define REROUTE_SETTINGS_COLUMNS "reroute_enabled, reroute_after, reroute_skip_days, timezone"

extern uint8 SkipDaysMask(ArrayType *days);
extern void ReadRerouteSettings(HeapTuple row, TupleDesc desc, int first, RerouteSettings *s);
extern TimestampTz RerouteDeadline(const RerouteSettings *s, TimestampTz from);
extern TimestampTz RerouteDeadlineFor(const RerouteSettings *s, const char *dealer_number,
									  TimestampTz from);

#endif /* AIMROUTE_REROUTE_H */
