/*
 * opening_hours.h
 *		Dealers' business hours: a subset of OpenStreetMap's opening_hours.
 */
#ifndef AIMROUTE_OPENING_HOURS_H
#define AIMROUTE_OPENING_HOURS_H

#include "datatype/timestamp.h"
#include "pgtime.h"

/* Most time ranges one day may have (after merging overlaps). */
#define OPENING_HOURS_MAX_RANGES 24

/* A week of opening hours: per ISO weekday (1 = Monday), minute ranges. */
typedef struct OpeningHours
{
	int nranges[8];							  /* index 1..7 */
	int16 start[8][OPENING_HOURS_MAX_RANGES]; /* minutes after local midnight */
	int16 end[8][OPENING_HOURS_MAX_RANGES];	  /* exclusive; 1440 is midnight */
} OpeningHours;

/* Why a value was refused, and where. */
typedef struct OpeningHoursError
{
	int position;		/* 1-based character of the bad token */
	char token[64];		/* the bad token as written, shortened */
	const char *reason; /* a sentence without its period */
} OpeningHoursError;

extern bool OpeningHoursParse(const char *value, OpeningHours *oh, OpeningHoursError *err);
extern void OpeningHoursParseOrError(const char *value, OpeningHours *oh);
extern int64 OpenTimeOf(const Interval *after);
extern bool BusinessHoursDeadline(const OpeningHours *oh, pg_tz *tz, uint8 skip_days,
								  TimestampTz from, int64 open_usecs, TimestampTz *due);

#endif /* AIMROUTE_OPENING_HOURS_H */
