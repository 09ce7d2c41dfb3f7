/*
 * country.h
 *		Country normalization: ISO 3166-1 alpha-2, alpha-3 or English name
 *		to alpha-2.
 */
#ifndef AIMROUTE_COUNTRY_H
#define AIMROUTE_COUNTRY_H

extern const char *CountryNormalize(const char *raw, int len);

#endif /* AIMROUTE_COUNTRY_H */
