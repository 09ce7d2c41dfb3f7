/*
 * postgis.c
 *		Finding PostGIS's objects from C.
 *
 * PostGIS may live in any schema, and a user's search_path need not name it,
 * so SQL that aimroute builds at run time qualifies PostGIS functions and
 * types with the schema found here.  The routing model calls PostGIS's
 * functions by OID, found here in PostGIS's schema without the caller's
 * USAGE privilege on it: an administrator who put PostGIS in a schema of
 * its own need not open that schema to every role that inserts a lead.
 */
#include "postgres.h"

#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "postgis.h"

/*
 * PostgisSchema returns the quoted name of the schema PostGIS is installed
 * in, ready to prefix a function or type name.  The answer is cached for the
 * extension's OID, so a dropped and re-created PostGIS is found again.
 */
static Oid cached_ext = InvalidOid;
static Oid cached_namespace = InvalidOid;
static char *cached_schema = NULL;

const char *
PostgisSchema(void)
{
	Oid ext = get_extension_oid("postgis", true);
	Oid owner;
	Oid nsp = InvalidOid;
	char *name;

	if (!OidIsValid(ext))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"postgis\" is not installed"),
				 errhint("Run CREATE EXTENSION aimroute CASCADE, which installs PostGIS too.")));
	if (ext == cached_ext)
		return cached_schema;

	if (!ExtensionRow("postgis", &ext, &owner, &nsp))
		nsp = InvalidOid;
	name = OidIsValid(nsp) ? get_namespace_name(nsp) : NULL;
	if (name == NULL)
		elog(ERROR, "could not find the schema of extension \"postgis\"");

	cached_namespace = nsp;
	if (cached_schema != NULL)
		pfree(cached_schema);
	cached_schema = MemoryContextStrdup(TopMemoryContext, quote_identifier(name));
	cached_ext = ext;
	return cached_schema;
}

/*
 * PostgisType returns the OID of one of PostGIS's types.
 */
Oid
PostgisType(const char *name)
{
	Oid typid;

	(void) PostgisSchema();
	typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum(name),
							ObjectIdGetDatum(cached_namespace));
	if (!OidIsValid(typid))
		elog(ERROR, "type %s not found in the schema of extension \"postgis\"", name);
	return typid;
}

/*
 * PostgisGeographyType returns the OID of PostGIS's geography type.
 */
Oid
PostgisGeographyType(void)
{
	return PostgisType("geography");
}

/*
 * PostgisFunction returns the OID of one of PostGIS's functions, by name
 * and argument types, looked up in PostGIS's schema by the catalog cache:
 * no search_path, and no check of the caller's USAGE privilege on that
 * schema.
 */
Oid
PostgisFunction(const char *name, int nargs, const Oid *argtypes)
{
	oidvector *args = buildoidvector(argtypes, nargs);
	Oid oid;

	(void) PostgisSchema();
	oid = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid, CStringGetDatum(name),
						  PointerGetDatum(args), ObjectIdGetDatum(cached_namespace));
	if (!OidIsValid(oid))
		elog(ERROR, "function %s not found in the schema of extension \"postgis\"", name);
	return oid;
}
