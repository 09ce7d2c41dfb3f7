/*
 * postgis.h
 *		Finding PostGIS's objects from C, wherever PostGIS is installed.
 */
#ifndef AIMROUTE_POSTGIS_H
#define AIMROUTE_POSTGIS_H

extern const char *PostgisSchema(void);
extern Oid PostgisType(const char *name);
extern Oid PostgisGeographyType(void);
extern Oid PostgisFunction(const char *name, int nargs, const Oid *argtypes);

#endif /* AIMROUTE_POSTGIS_H */
