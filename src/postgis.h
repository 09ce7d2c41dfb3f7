/*
 * postgis.h
 *		Finding PostGIS's objects from C, wherever PostGIS is installed.
 */
#ifndef AIMROUTE_POSTGIS_H
#define AIMROUTE_POSTGIS_H

extern const char *PostgisSchema(void);
extern Oid PostgisGeographyType(void);

#endif /* AIMROUTE_POSTGIS_H */
