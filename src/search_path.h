/*
 * search_path.h
 *		The search_path aimroute's SPI statements run under (search_path.c).
 */
#ifndef AIMROUTE_SEARCH_PATH_H
#define AIMROUTE_SEARCH_PATH_H

/* What every statement of aimroute resolves names through. */
#define AIMROUTE_SEARCH_PATH "pg_catalog, pg_temp"

extern int PinSearchPath(void);
extern void RestoreSearchPath(int pinned);
extern int SpiConnectPinned(void);
extern void SpiFinishPinned(int pinned);

#endif /* AIMROUTE_SEARCH_PATH_H */
