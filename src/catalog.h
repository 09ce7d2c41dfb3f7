/*
 * catalog.h
 *		What aimroute's C code reads of PostgreSQL's catalogs (catalog.c).
 */
#ifndef AIMROUTE_CATALOG_H
#define AIMROUTE_CATALOG_H

extern bool ExtensionRow(const char *name, Oid *ext, Oid *owner, Oid *schema);
extern bool AimrouteHasColumn(const char *table, const char *column);

#endif /* AIMROUTE_CATALOG_H */
