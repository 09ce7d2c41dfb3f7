/*
 * catalog.h
 *		What aimroute's C code reads of PostgreSQL's catalogs (catalog.c).
 */
#ifndef AIMROUTE_CATALOG_H
#define AIMROUTE_CATALOG_H

extern bool ExtensionRow(const char *name, Oid *ext, Oid *owner, Oid *schema);

#endif /* AIMROUTE_CATALOG_H */
