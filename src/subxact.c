/*
 * subxact.c
 *		Running a piece of work in a subtransaction, as PL/pgSQL runs an
 *		exception block: the delivery worker's set-based statements, which
 *		fall back to one message at a time, and Drive Distance's reads of
 *		the road network, which fall back to the crow flies.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/resowner.h"

#include "subxact.h"

/*
 * TrySubtransaction runs body(arg) in a subtransaction of the current
 * transaction, in the subtransaction's memory context: it returns NULL
 * when body went through, else body's error, copied (in the caller's
 * memory context), once the subtransaction is rolled back.  The caller's memory context, resource owner and interrupt
 * hold-off count are as they were either way (an ERROR zeroes the count).
 */
ErrorData *
TrySubtransaction(void (*body)(void *arg), void *arg)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	uint32 held = InterruptHoldoffCount;
	ErrorData *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		body(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		InterruptHoldoffCount = held;
		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(context);
	CurrentResourceOwner = owner;
	return error;
}
