/*
 * postal.h
 *		Postal-code normalization shared by the loader, dealers, territories
 *		and leads.
 */
#ifndef AIMROUTE_POSTAL_H
#define AIMROUTE_POSTAL_H

extern char *PostalNormalizeLexical(const char *country, const char *raw, int len);
extern bool PostalIsWellFormed(const char *country, const char *code);
extern char *PostalFallback(const char *country, const char *code);
extern char *PostalResolve(const char *country, const char *raw, int len);

#endif /* AIMROUTE_POSTAL_H */
