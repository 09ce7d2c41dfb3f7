/*
 * subxact.h
 *		Running a piece of work in a subtransaction (subxact.c).
 */
#ifndef AIMROUTE_SUBXACT_H
#define AIMROUTE_SUBXACT_H

extern ErrorData *TrySubtransaction(void (*body)(void *arg), void *arg);

#endif /* AIMROUTE_SUBXACT_H */
