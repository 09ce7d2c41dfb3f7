/*
 * caps.h
 *		Daily lead caps of dealers (caps.c).
 */
#ifndef AIMROUTE_CAPS_H
#define AIMROUTE_CAPS_H

#include "datatype/timestamp.h"
#include "pgtime.h"

extern bool CapRoom(const char *dealer, int cap, TimestampTz received, pg_tz *tz, bool take,
					char **day);

#endif /* AIMROUTE_CAPS_H */
