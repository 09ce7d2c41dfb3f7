/*
 * search_path.c
 *		The search_path aimroute's SPI statements run under.
 *
 * No statement of aimroute resolves a name through its caller's
 * search_path (SPEC section 5).  The SQL and PL/pgSQL functions pin
 * theirs (SET search_path = pg_catalog, pg_temp); the C code runs its SPI
 * statements under the same path, set here when it connects to SPI and
 * restored when it disconnects, as PostgreSQL does for a function's SET
 * clause.  Without it, a caller's look-alike operator or function in a
 * schema it puts first, or a temporary type named text, would be taken
 * for pg_catalog's by a statement prepared under its path -- and
 * PostgreSQL's plan cache prepares a kept plan again whenever the caller's
 * path differs from the one it was prepared under.
 *
 * PostGIS's functions, which aimroute's in-memory routing calls through
 * fmgr, run SQL of their own (PostGIS looks up spatial_ref_sys with an
 * unqualified "="): the SQL entry points of routing (leads.c) pin the path
 * around the whole routing, not only around SPI.
 *
 * The path is not pushed as an override (PushOverrideSearchPath): the
 * statements call functions with a SET search_path of their own, which an
 * override would beat.  An error in between needs no restoring: aborting
 * the (sub)transaction undoes the setting.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "executor/spi.h"
#include "utils/guc.h"

#include "search_path.h"

/*
 * PinSearchPath sets search_path to AIMROUTE_SEARCH_PATH until
 * RestoreSearchPath, to which it returns what to restore.  When the path
 * already is that one, as in aimroute's own functions and the rows of
 * their INSERTs, it sets nothing: the routing trigger runs for every row
 * of a COPY.
 */
int
PinSearchPath(void)
{
	int nest_level;

	if (namespace_search_path != NULL && strcmp(namespace_search_path, AIMROUTE_SEARCH_PATH) == 0)
		return 0;
	nest_level = NewGUCNestLevel();
	(void) set_config_option("search_path", AIMROUTE_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest_level;
}

/*
 * RestoreSearchPath restores the search_path PinSearchPath set (pinned is
 * what it returned).
 */
void
RestoreSearchPath(int pinned)
{
	if (pinned > 0)
		AtEOXact_GUC(true, pinned);
}

/*
 * SpiConnectPinned connects to SPI and pins search_path (PinSearchPath)
 * until SpiFinishPinned, to which it returns what to restore.
 */
int
SpiConnectPinned(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	return PinSearchPath();
}

/*
 * SpiFinishPinned restores the search_path SpiConnectPinned set (pinned is
 * what it returned) and disconnects from SPI.
 */
void
SpiFinishPinned(int pinned)
{
	RestoreSearchPath(pinned);
	SPI_finish();
}
