/*
 * kept_plan.h
 *		A statement prepared once per backend and kept: KeptPlan.
 */
#ifndef AIMROUTE_KEPT_PLAN_H
#define AIMROUTE_KEPT_PLAN_H

#include "executor/spi.h"

/*
 * KeptPlan returns the plan in *plan, preparing sql (with nargs arguments
 * of the given types and the given cursor options) and keeping it for the
 * life of the backend the first time.  The caller is connected to SPI.
 * A kept plan is re-planned by PostgreSQL when what it reads changes, and
 * prepared again when the search_path differs from the one it was prepared
 * under: run it under the path search_path.h pins (SpiConnectPinned,
 * PinSearchPath), so that it never is.
 */
static inline SPIPlanPtr
KeptPlan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types, int cursor_options)
{
	if (*plan == NULL)
	{
		SPIPlanPtr p = SPI_prepare_cursor(sql, nargs, types, cursor_options);

		if (p == NULL)
			elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

#endif /* AIMROUTE_KEPT_PLAN_H */
