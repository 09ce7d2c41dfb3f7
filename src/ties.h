/*
 * ties.h
 *		Round robin among equally near dealers (ties.c).
 */
#ifndef AIMROUTE_TIES_H
#define AIMROUTE_TIES_H

#include "datatype/timestamp.h"

/* A tied dealer's turns of one brand, as aimroute.tie_turns holds them. */
typedef struct TieTurn
{
	int64 leads;		 /* leads it received by a turn */
	bool had_turn;		 /* false: none yet (last_at NULL) */
	TimestampTz last_at; /* when it received the last one */
} TieTurn;

extern int TieChoose(const char *brand, const char *const *dealers, int n, bool lock,
					 TieTurn *turns);
extern void TieTake(const char *brand, const char *dealer);
extern bool TieTurnFirst(const TieTurn *a, const TieTurn *b);

#endif /* AIMROUTE_TIES_H */
