/*
 * catalog.c
 *		What aimroute's C code reads of PostgreSQL's catalogs.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "catalog.h"

/*
 * ExtensionRow reads an extension's OID, owner and schema from
 * pg_extension (PostgreSQL 15 exports no function for the last two); false
 * when the extension is not installed.
 */
bool
ExtensionRow(const char *name, Oid *ext, Oid *owner, Oid *schema)
{
	Relation rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple tuple;
	bool found;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(name));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	found = HeapTupleIsValid(tuple);
	if (found)
	{
		Form_pg_extension row = (Form_pg_extension) GETSTRUCT(tuple);

		*ext = row->oid;
		*owner = row->extowner;
		*schema = row->extnamespace;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * AimrouteHasColumn tells whether aimroute's table has a column: a
 * database not updated to this library's version yet lacks the newer ones
 * (catalog cache look-ups, no statement).
 */
bool
AimrouteHasColumn(const char *table, const char *column)
{
	Oid namespace = get_namespace_oid("aimroute", true);
	Oid relid = OidIsValid(namespace) ? get_relname_relid(table, namespace) : InvalidOid;

	return OidIsValid(relid) && get_attnum(relid, column) != InvalidAttrNumber;
}
