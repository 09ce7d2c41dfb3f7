/*
 * model_share.c
 *		One routing model per database and configuration version, in
 *		shared memory, for every backend of the database to map.
 *
 * A model is a few tens of megabytes at 100,000 dealers and takes most of
 * a second to build; built by each backend, every new session paid it
 * again.  When the library is preloaded, the first backend that needs a
 * version builds it, copies it into a dynamic shared memory segment and
 * publishes the segment's handle here; the others map the segment.  The
 * model's bytes hold no pointer (model.h), so they mean the same at any
 * address.
 *
 * The table of published models is a small fixed struct requested at
 * preload, under one LWLock: one model per database, the newest version
 * published.  Its segment is pinned while it is published, so that it
 * outlives its builder; a newer version unpins it, and PostgreSQL frees
 * the segment when the last backend that maps it lets it go (model.c maps
 * a new version and lets the old one go when its snapshot sees the new
 * version).  A crash of any backend makes the postmaster start shared
 * memory afresh, and with it every segment: none is left behind.
 *
 * Building is serialized per version by a heavyweight lock, held by the
 * builder while it builds: a backend that needs the same version waits on
 * that lock, then finds the model published.  A builder that fails
 * releases the lock with its transaction, and the next one builds; the
 * deadlock detector sees these waits like any other.  A model built under
 * a configuration the backend's own transaction changed is not published
 * (model.c): nobody else can see that version yet, and it may never
 * commit.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "model.h"
#include "model_share.h"

/* Databases whose models are published at once; more build their own. */
#define MODEL_SLOTS 64

/* The tag's last field: an advisory lock no SQL function can take. */
#define MODEL_LOCK_FIELD4 0x4152

typedef struct ModelSlot
{
	ModelKey key; /* key.database InvalidOid: free */
	dsm_handle handle;
	Size size;
} ModelSlot;

typedef struct ModelShared
{
	LWLock *lock;
	ModelSlot slots[MODEL_SLOTS];
} ModelShared;

static ModelShared *model_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void ModelShmemRequest(void);
static void ModelShmemStartup(void);
static bool SameKey(const ModelKey *a, const ModelKey *b);
static void BuildLockTag(LOCKTAG *tag, const ModelKey *key);
static dsm_segment *CreateSegment(Size size);

/*
 * ModelShareInit asks for the table of published models, when the library
 * is being preloaded.
 */
void
ModelShareInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ModelShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ModelShmemStartup;
}

/*
 * ModelShmemRequest asks for the table and its lock.
 */
static void
ModelShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ModelShared)));
	RequestNamedLWLockTranche("aimroute model", 1);
}

/*
 * ModelShmemStartup creates the table, empty, or finds it.
 */
static void
ModelShmemStartup(void)
{
	bool found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	model_shared = ShmemInitStruct("aimroute model", sizeof(ModelShared), &found);
	if (!found)
	{
		memset(model_shared, 0, sizeof(ModelShared));
		model_shared->lock = &(GetNamedLWLockTranche("aimroute model"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * ModelShareEnabled tells whether models can be shared: the library was
 * preloaded.
 */
bool
ModelShareEnabled(void)
{
	return model_shared != NULL;
}

/*
 * SameKey tells whether two keys name the same configuration.
 */
static bool
SameKey(const ModelKey *a, const ModelKey *b)
{
	return a->database == b->database && a->relid == b->relid && a->version == b->version &&
		   a->xmin == b->xmin;
}

/*
 * ModelShareAttach maps the published model of a key, for as long as the
 * backend keeps it (until dsm_detach); NULL when none is published.
 */
dsm_segment *
ModelShareAttach(const ModelKey *key)
{
	dsm_segment *segment = NULL;

	LWLockAcquire(model_shared->lock, LW_SHARED);
	for (int i = 0; i < MODEL_SLOTS; i++)
	{
		ModelSlot *slot = &model_shared->slots[i];

		if (!SameKey(&slot->key, key))
			continue;
		/* Pinned while published: the segment is there. */
		segment = dsm_attach(slot->handle);
		if (segment != NULL)
			dsm_pin_mapping(segment);
		break;
	}
	LWLockRelease(model_shared->lock);
	return segment;
}

/*
 * BuildLockTag names the lock of building one configuration version.
 */
static void
BuildLockTag(LOCKTAG *tag, const ModelKey *key)
{
	SET_LOCKTAG_ADVISORY(*tag, key->database, (uint32) ((uint64) key->version >> 32),
						 (uint32) key->version, MODEL_LOCK_FIELD4);
}

/*
 * ModelShareLockBuild waits until nobody else builds this version, and
 * keeps others from building it until ModelShareUnlockBuild or the end of
 * the transaction.
 */
void
ModelShareLockBuild(const ModelKey *key)
{
	LOCKTAG tag;

	BuildLockTag(&tag, key);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * ModelShareUnlockBuild lets the next backend look for the model.
 */
void
ModelShareUnlockBuild(const ModelKey *key)
{
	LOCKTAG tag;

	BuildLockTag(&tag, key);
	LockRelease(&tag, ExclusiveLock, false);
}

/*
 * CreateSegment creates a segment of size bytes, mapped until dsm_detach;
 * NULL, with the reason in the server log, when the system has no room for
 * it (a small /dev/shm, as containers often have): routing then goes on
 * with the backend's own copy rather than failing the lead.  The attempt
 * runs in a subtransaction, so that its error is undone cleanly.
 */
static dsm_segment *
CreateSegment(Size size)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	dsm_segment *segment = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		segment = dsm_create(size, DSM_CREATE_NULL_IF_MAXSEGMENTS);
		if (segment != NULL)
			dsm_pin_mapping(segment);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ereport(LOG, (errmsg("aimroute: the routing model stays in this backend's memory: %s",
							 error->message)));
		FreeErrorData(error);
		segment = NULL;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(context);
	CurrentResourceOwner = owner;
	if (segment == NULL)
		ereport(DEBUG1, (errmsg("aimroute: no shared memory segment for the routing model")));
	return segment;
}

/*
 * ModelSharePublish copies a model's bytes into a new segment and
 * publishes it for its key, in place of the database's older version;
 * returns the segment, mapped until dsm_detach, or NULL when it is not
 * published: no room for it, no free slot in the table, or a newer version
 * of the database published already (a snapshot taken before that version
 * committed).  The caller then keeps its own copy.
 */
dsm_segment *
ModelSharePublish(const ModelKey *key, const char *bytes, Size size)
{
	dsm_segment *segment;
	ModelSlot *target = NULL;

	if (IsInParallelMode())
		return NULL;
	segment = CreateSegment(size);
	if (segment == NULL)
		return NULL;
	memcpy(dsm_segment_address(segment), bytes, size);

	LWLockAcquire(model_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MODEL_SLOTS; i++)
	{
		ModelSlot *slot = &model_shared->slots[i];

		if (slot->key.database == key->database)
		{
			target = slot;
			break;
		}
		if (target == NULL && !OidIsValid(slot->key.database))
			target = slot;
	}
	if (target != NULL && OidIsValid(target->key.database))
	{
		if (target->key.relid == key->relid && target->key.version > key->version)
			target = NULL; /* a newer version is published */
		else
		{
			/* Freed when the last backend mapping it lets it go. */
			dsm_unpin_segment(target->handle);
			memset(target, 0, sizeof(ModelSlot));
		}
	}
	if (target != NULL)
	{
		dsm_pin_segment(segment);
		target->key = *key;
		target->handle = dsm_segment_handle(segment);
		target->size = size;
	}
	LWLockRelease(model_shared->lock);
	if (target == NULL)
	{
		/* Nobody else will map it: the caller's own copy will do. */
		dsm_detach(segment);
		return NULL;
	}
	return segment;
}
