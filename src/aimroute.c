/*
 * aimroute.c
 *		Entry points of the aimroute extension.
 *
 * Each concern lives in its own file (country.c, postal.c, postal_loader.c,
 * postgis.c); this file holds the module magic and the library's version.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "delivery.h"
#include "model_share.h"
#include "reroute_worker.h"
#include "worker.h"

PG_MODULE_MAGIC;

void _PG_init(void);

PG_FUNCTION_INFO_V1(aimroute_library_version);

/*
 * _PG_init defines the extension's settings when the library is loaded, and
 * registers the workers and the shared routing models when it is preloaded.
 */
void
_PG_init(void)
{
	WorkerInit();
	RerouteWorkerInit();
	DeliveryWorkerInit();
	ModelShareInit();
	MarkGUCPrefixReserved("aimroute");
}

/*
 * aimroute_library_version is the SQL function aimroute.library_version():
 * the version of the loaded shared library, to compare with the installed
 * extension's version after an upgrade.
 */
Datum
aimroute_library_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(AIMROUTE_VERSION));
}
