/*
 * model.c
 *		The routing configuration as the rules (routing.c) read it.
 *
 * Routing a lead by SQL queries would cost several index scans and
 * executor start-ups per lead, many times the INSERT it rides on.  Instead,
 * routing reads a model of what it needs -- settings, brands, dealers with
 * their brands, products and stock, territories -- with a 3-d tree per
 * country and brand over the active dealers' positions on the unit sphere.
 *
 * The model is one block of bytes that holds no pointer: every array and
 * string in it is addressed by its offset from the block's start (ModelRef,
 * model.h).  When the library is preloaded, one block per database and
 * configuration version lives in shared memory and every backend maps it
 * (model_share.c); otherwise, or when the backend's own transaction changed
 * the configuration, the backend builds the same block in its own memory.
 * The search reads it the same way wherever it is.  What cannot be shared
 * stays with each backend (Model): the PostGIS functions' call info and
 * the settings' time zone.
 *
 * The model holds every postal code of aimroute.postal_codes too (about
 * 46,000 with the bundled file), with its centre point already on the
 * unit sphere: a lead's postal code is a binary search, in the first
 * session as in the thousandth, instead of an index probe the first time
 * a session meets the code.
 *
 * The model is never stale: every statement that changes one of those
 * tables gives aimroute.config_version a new, never reused number (a
 * statement trigger, schema/015_config_version.sql).  Routing reads that
 * number under the lead's own snapshot (once per snapshot: the rows of one
 * COPY share it) and takes the model of exactly that number, so a routing
 * sees exactly the configuration its snapshot sees: a change made earlier
 * in the same transaction, one rolled back, one committed by another
 * session.
 *
 * Distances stay PostGIS's: the tree orders dealers on the sphere, and the
 * few dealers close enough to win are measured with PostGIS's own
 * st_distance(geography, geography), called through fmgr, so the answer is
 * the one ST_Distance gives, bit for bit.  The spheroid distance of a pair
 * differs from the sphere distance by less than SPHERE_MARGIN, which bounds
 * the search.
 *
 * The tests compare every decision with the rules written independently in
 * SQL (test/routing_property.sql).
 */
#include "postgres.h"

#include <math.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/dsm.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "storage/proc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/memutils.h"

#include "catalog.h"
#include "model.h"
#include "model_share.h"
#include "postal.h"
#include "postgis.h"
#include "routing.h"
#include "search_path.h"

#define EARTH_MEAN_RADIUS_M 6371008.7714  /* WGS84 mean radius */
#define FIRST_BLOCK			(1024 * 1024) /* a model's bytes to start building with */
#define RECENT_PLACES		4096		  /* postal codes a session keeps before starting over */

PG_FUNCTION_INFO_V1(aimroute_routing_cache_info);

/*
 * A model being built: its bytes so far, header first, grown by doubling.
 * Pieces are addressed by offset, so a piece's address changes when the
 * bytes grow: take it (At) after the last Keep, never across one.
 */
typedef struct Builder
{
	char *bytes;
	Size used;
	Size size;
	ModelRef empty; /* "" */
	Model *model;	/* the backend's handle: PostGIS calls */
} Builder;

#define HEAD(b)			 ((ModelData *) (b)->bytes)
#define At(b, ref, type) ((type *) ((b)->bytes + (ref)))

static Model *current = NULL;
static MemoryContext building = NULL; /* a build that failed half way, to free */
static MemoryContext scratch = NULL;  /* what a build needs only while it runs */

static Model *NewModel(void);
static void FreeModel(Model *m);
static void TakeBytes(Model *m, const ModelKey *key, bool own);
static char *Build(Model *m, const ModelKey *key);
static void Bind(Model *m, const char *bytes);
static int DealerIndex(const char *base, const ModelData *d, const char *number);
static ModelRef Keep(Builder *b, Size size);
static ModelRef KeepString(Builder *b, const char *s);
static ModelRef KeepText(Builder *b, HeapTuple row, TupleDesc desc, int col);
static void LoadSettings(Builder *b);
static void LoadBrands(Builder *b);
static void LoadProducts(Builder *b);
static void LoadDealers(Builder *b);
static void LoadDealerLinks(Builder *b);
static int CompareInts(const void *a, const void *b);
static void LoadTerritories(Builder *b);
static void LoadDatedProducts(Builder *b);
static TimestampTz PeriodBound(HeapTuple row, TupleDesc desc, int col, TimestampTz open);
static bool ProductValidAt(Model *c, int dealer, int product, TimestampTz at);
static void BuildGroups(Builder *b);
static void BuildTrees(Builder *b);
static inline bool TreeAccepts(Model *c, const CandidateFilter *f, int dealer);
static bool PassesRest(Model *c, const CandidateFilter *f, int dealer);
static int FindText(const char *base, const ModelRef *sorted, int n, const char *key);
static bool Contains(const char *base, ModelRef sorted, int n, int value);
static int ReadQuery(const char *sql, bool read_only, long count);
static bool ReadRoundRobin(void);
static int Candidates(Model *c, const CandidateFilter *f, const double xyz[3], Datum centroid,
					  double limit_m, bool all, Candidate **out);
static void ReadDrive(Builder *b);
static char *Text(HeapTuple row, TupleDesc desc, int col);
static double ChordFor(double sphere_m);
static int CompareCandidates(const void *a, const void *b);
static void FindPostgisFunctions(Model *c);
static bool PointLatLon(Model *c, Datum point, double *lat, double *lon);
static bool CallNullable(FmgrInfo *fn, Datum arg, Datum *result);
static void LoadPostalCodes(Builder *b);
static HTAB *NewRecentPlaces(MemoryContext context);

/*
 * The arrays of a 3-d tree, as addresses in one backend: the search and
 * the build read the tree through them.
 */
typedef struct KdView
{
	int n;
	int *dealer;
	double (*pt)[3];
	unsigned char *dim;
} KdView;

static KdView TreeView(const char *base, const KdTree *t);
static void KdBuild(KdView *t, int lo, int hi);
static void KdNearest(const KdView *t, int lo, int hi, const double q[3], Model *c,
					  const CandidateFilter *f, int *best, double *best_d2);
static void KdRange(const KdView *t, int lo, int hi, const double q[3], double r2, Model *c,
					const CandidateFilter *f, List **found);

/*
 * The OID of aimroute.config_version, looked up by name once and forgotten
 * whenever the catalog says that relation, or any schema, changed (a
 * rename, a drop, the extension installed again): each statement would
 * otherwise pay two catalog cache look-ups by name.
 */
static Oid version_relid = InvalidOid;

/*
 * ForgetVersionRelation is the relation cache callback: InvalidOid is
 * every relation.
 */
static void
ForgetVersionRelation(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == version_relid)
		version_relid = InvalidOid;
}

/*
 * ForgetVersionSchema is the schema catalog cache callback.
 */
static void
ForgetVersionSchema(Datum arg, int cacheid, uint32 hashvalue)
{
	version_relid = InvalidOid;
}

/*
 * OpenVersion opens aimroute.config_version, locked for reading.
 */
static Relation
OpenVersion(void)
{
	static bool registered = false;

	if (!registered)
	{
		CacheRegisterRelcacheCallback(ForgetVersionRelation, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, ForgetVersionSchema, (Datum) 0);
		registered = true;
	}
	for (;;)
	{
		Oid relid = version_relid;
		Relation rel;

		if (!OidIsValid(relid))
		{
			relid = get_relname_relid("config_version", get_namespace_oid("aimroute", false));
			if (!OidIsValid(relid))
				ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
								errmsg("aimroute.config_version does not exist"),
								errhint("Reinstall the extension: the table is created by "
										"CREATE EXTENSION.")));
			version_relid = relid;
		}
		/* Taking the lock reads the catalog's news: look again if it says anything. */
		rel = try_relation_open(relid, AccessShareLock);
		if (rel != NULL && version_relid == relid)
			return rel;
		if (rel != NULL)
			relation_close(rel, AccessShareLock);
		version_relid = InvalidOid;
	}
}

/*
 * Where the version row was last found: its relation's file and its place
 * in block 0.  The row is updated in place of itself on every change of
 * the configuration (a HOT update, nearly always on the same page), so the
 * next read looks there first.
 */
static struct
{
	bool valid;
	RelFileNode node;
	ItemPointerData tid;
} version_row;

/*
 * VersionFromTuple fills a key from the version row.
 */
static void
VersionFromTuple(HeapTuple tuple, TupleDesc desc, int attnum, ModelKey *key, bool *own)
{
	bool isnull;
	Datum d = heap_getattr(tuple, attnum, desc, &isnull);

	if (!isnull)
		key->version = DatumGetInt64(d);
	/* The raw xmin: freezing the row does not change the key. */
	key->xmin = HeapTupleHeaderGetRawXmin(tuple->t_data);
	*own = TransactionIdIsCurrentTransactionId(key->xmin);
}

/*
 * FetchRememberedVersion reads the version row where it was last found,
 * when the snapshot sees it there; false, reading nothing, otherwise.
 *
 * Exact: the table holds one row for any snapshot (its primary key is a
 * boolean that must be true), so a row of this table the snapshot sees is
 * the row.  Only a place in block 0 is remembered: that block exists
 * whenever the relation's file holds any row, and reading it never asks
 * the kernel for the file's size, which a scan's start does.  A new file
 * (TRUNCATE, VACUUM FULL, CLUSTER) is a new node, and the scan is used.
 */
static bool
FetchRememberedVersion(Relation rel, Snapshot snapshot, int attnum, ModelKey *key, bool *own)
{
	HeapTupleData tuple;
	Buffer buffer;

	if (!version_row.valid || !RelFileNodeEquals(version_row.node, rel->rd_node) ||
		ItemPointerGetBlockNumber(&version_row.tid) != 0)
		return false;
	tuple.t_self = version_row.tid;
	if (!heap_fetch(rel, snapshot, &tuple, &buffer, true))
	{
		if (BufferIsValid(buffer))
			ReleaseBuffer(buffer);
		return false;
	}
	VersionFromTuple(&tuple, RelationGetDescr(rel), attnum, key, own);
	ReleaseBuffer(buffer);
	return true;
}

/*
 * ReadVersion reads aimroute.config_version under the active snapshot, the
 * one routing's queries use: the key of the configuration it sees, and
 * whether this transaction wrote that version (own).  It reads the heap
 * directly: this runs for every statement that routes, and fetching the
 * one row where it was last seen costs less than a scan, which costs less
 * than executing a query.  The number is not confidential, so no
 * privilege is checked.
 */
static void
ReadVersion(ModelKey *key, bool *own)
{
	Relation rel;
	Snapshot snapshot = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
	TableScanDesc scan;
	HeapTuple tuple;
	int attnum;
	int rows = 0;

	memset(key, 0, sizeof(*key));
	*own = false;
	key->database = MyDatabaseId;
	rel = OpenVersion();
	key->relid = RelationGetRelid(rel);
	attnum = SPI_fnumber(RelationGetDescr(rel), "version");
	if (attnum > 0 && FetchRememberedVersion(rel, snapshot, attnum, key, own))
	{
		table_close(rel, AccessShareLock);
		return;
	}
	version_row.valid = false;
	scan = table_beginscan(rel, snapshot, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		if (attnum > 0)
			VersionFromTuple(tuple, RelationGetDescr(rel), attnum, key, own);
		version_row.node = rel->rd_node;
		version_row.tid = tuple->t_self;
		rows++;
	}
	table_endscan(scan);
	version_row.valid = rows == 1 && attnum > 0;
	table_close(rel, AccessShareLock);
	if (rows != 1 || attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("aimroute.config_version must hold exactly one row"),
				 errhint("Reinstall the extension: the row is created by CREATE EXTENSION.")));
}

/*
 * The snapshot the configuration version was last read under.  Another
 * MVCC snapshot of the same transaction, subtransaction and command with
 * the same xmin, xmax and in-progress transactions sees the same rows, so
 * routing under it needs no new read: the rows of one COPY, INSERT ...
 * SELECT or process_staging check the version once.
 */
static struct
{
	bool valid;
	LocalTransactionId lxid;
	SubTransactionId subxid;
	CommandId curcid;
	TransactionId xmin;
	TransactionId xmax;
	bool suboverflowed;
	uint32 xcnt;
	int32 subxcnt;
	TransactionId *xip;
	TransactionId *subxip;
	int xip_size;
	int subxip_size;
} checked;

/*
 * RoutingSnapshot is the snapshot routing reads under, or NULL when it is
 * not one that can be recognized again.
 */
static Snapshot
RoutingSnapshot(void)
{
	Snapshot snapshot = ActiveSnapshotSet() ? GetActiveSnapshot() : NULL;

	return snapshot != NULL && snapshot->snapshot_type == SNAPSHOT_MVCC ? snapshot : NULL;
}

/*
 * SameAsChecked tells whether a snapshot sees what the one the version was
 * last read under saw.
 */
static bool
SameAsChecked(Snapshot s)
{
	return s != NULL && checked.valid && checked.lxid == MyProc->lxid &&
		   checked.subxid == GetCurrentSubTransactionId() && checked.curcid == s->curcid &&
		   checked.xmin == s->xmin && checked.xmax == s->xmax &&
		   checked.suboverflowed == s->suboverflowed && checked.xcnt == s->xcnt &&
		   checked.subxcnt == s->subxcnt &&
		   memcmp(checked.xip, s->xip, sizeof(TransactionId) * s->xcnt) == 0 &&
		   memcmp(checked.subxip, s->subxip, sizeof(TransactionId) * Max(s->subxcnt, 0)) == 0;
}

/*
 * RememberChecked notes the snapshot the version was just read under.
 */
static void
RememberChecked(Snapshot s)
{
	checked.valid = false;
	if (s == NULL || s->subxcnt < 0)
		return;
	if (checked.xip_size < (int) s->xcnt || checked.xip == NULL)
	{
		if (checked.xip)
			pfree(checked.xip);
		checked.xip_size = Max((int) s->xcnt, 16);
		checked.xip =
			MemoryContextAlloc(TopMemoryContext, sizeof(TransactionId) * checked.xip_size);
	}
	if (checked.subxip_size < s->subxcnt || checked.subxip == NULL)
	{
		if (checked.subxip)
			pfree(checked.subxip);
		checked.subxip_size = Max(s->subxcnt, 16);
		checked.subxip =
			MemoryContextAlloc(TopMemoryContext, sizeof(TransactionId) * checked.subxip_size);
	}
	checked.lxid = MyProc->lxid;
	checked.subxid = GetCurrentSubTransactionId();
	checked.curcid = s->curcid;
	checked.xmin = s->xmin;
	checked.xmax = s->xmax;
	checked.suboverflowed = s->suboverflowed;
	checked.xcnt = s->xcnt;
	checked.subxcnt = s->subxcnt;
	memcpy(checked.xip, s->xip, sizeof(TransactionId) * s->xcnt);
	memcpy(checked.subxip, s->subxip, sizeof(TransactionId) * s->subxcnt);
	checked.valid = true;
}

/*
 * SameModelKey tells whether a model is the one of a key.
 */
static bool
SameModelKey(const Model *m, const ModelKey *key)
{
	const ModelKey *k = &m->data->key;

	return k->database == key->database && k->relid == key->relid && k->version == key->version &&
		   k->xmin == key->xmin;
}

/*
 * ModelCurrent returns the model of the configuration the active snapshot
 * sees, taking the model of a new version when the configuration changed.
 */
Model *
ModelCurrent(void)
{
	ModelKey key;
	bool own;
	Snapshot snapshot;
	MemoryContext caller = CurrentMemoryContext;

	snapshot = RoutingSnapshot();
	if (current != NULL && SameAsChecked(snapshot))
		return current;
	checked.valid = false;
	ReadVersion(&key, &own);
	if (current != NULL && SameModelKey(current, &key))
	{
		RememberChecked(snapshot);
		return current;
	}

	if (current != NULL)
	{
		FreeModel(current);
		current = NULL;
	}
	if (building != NULL)
	{
		MemoryContextDelete(building);
		building = NULL;
	}
	current = NewModel();
	PG_TRY();
	{
		TakeBytes(current, &key, own);
	}
	PG_CATCH();
	{
		/* No half-made model is ever current; what a build left is freed next time. */
		MemoryContextSwitchTo(caller);
		FreeModel(current);
		current = NULL;
		PG_RE_THROW();
	}
	PG_END_TRY();
	RememberChecked(snapshot);
	return current;
}

/*
 * NewModel starts a backend's handle on a model, without the model's
 * bytes: what each backend has of its own.
 */
static Model *
NewModel(void)
{
	MemoryContext context =
		AllocSetContextCreate(TopMemoryContext, "aimroute model", ALLOCSET_DEFAULT_SIZES);
	Model *m = MemoryContextAllocZero(context, sizeof(Model));

	m->context = context;
	FindPostgisFunctions(m);
	return m;
}

/*
 * FreeModel lets a model go: the backend's part, and its mapping of the
 * shared bytes (the last backend to let a superseded version go frees it).
 */
static void
FreeModel(Model *m)
{
	if (m->segment != NULL)
		dsm_detach(m->segment);
	MemoryContextDelete(m->context);
}

/*
 * TakeBytes gives a model the bytes of a configuration: the shared copy of
 * its version when there is one or this backend can make one, else a copy
 * of the backend's own.  Only one backend builds a version at a time; the
 * others wait for it and map what it built.  A version the backend's own
 * transaction made is built for the backend alone.
 */
static void
TakeBytes(Model *m, const ModelKey *key, bool own)
{
	char *bytes = NULL;
	dsm_segment *segment = NULL;

	if (ModelShareEnabled() && !own)
	{
		segment = ModelShareAttach(key);
		if (segment == NULL && !IsInParallelMode())
		{
			ModelShareLockBuild(key);
			segment = ModelShareAttach(key);
			if (segment == NULL)
			{
				bytes = Build(m, key);
				segment = ModelSharePublish(key, bytes, ((ModelData *) bytes)->size);
			}
			ModelShareUnlockBuild(key);
		}
	}
	if (segment == NULL && bytes == NULL)
		bytes = Build(m, key);
	if (segment != NULL)
	{
		m->segment = segment;
		if (building != NULL)
			MemoryContextDelete(building);
		Bind(m, dsm_segment_address(segment));
	}
	else
	{
		/* The bytes are the backend's own, freed with the model. */
		MemoryContextSetParent(building, m->context);
		m->bytes_context = building;
		Bind(m, bytes);
	}
	building = NULL;
}

/*
 * aimroute_routing_cache_info is the SQL function
 * aimroute.routing_cache_info(): the model this session routes with,
 * brought up to date first.
 */
Datum
aimroute_routing_cache_info(PG_FUNCTION_ARGS)
{
	TupleDesc desc;
	Datum values[10];
	bool nulls[10] = { false };
	Model *c;
	int64 session;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "aimroute.routing_cache_info must return a composite type");
	desc = BlessTupleDesc(desc);
	c = ModelCurrent();
	session = MemoryContextMemAllocated(c->context, true);
	if (c->bytes_context != NULL)
		session -= MemoryContextMemAllocated(c->bytes_context, true);
	values[0] = BoolGetDatum(true); /* enabled: always, since aimroute.routing_cache was retired */
	values[1] = Int64GetDatum(c->data->key.version);
	values[2] = TimestampTzGetDatum(c->data->built_at);
	values[3] = Float8GetDatum(c->data->build_ms);
	values[4] = Int32GetDatum(c->data->ndealers);
	values[5] = Int32GetDatum(c->data->nterritories);
	values[6] = Int64GetDatum(c->data->npostal);
	values[7] = Int64GetDatum((int64) c->data->size);
	values[8] = CStringGetTextDatum(c->segment != NULL ? "shared" : "local");
	values[9] = Int64GetDatum(session);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/*
 * Build reads the configuration into a model's bytes, in a new memory
 * context (building) that the caller keeps or frees.  An error half way
 * leaves that context to the next ModelCurrent to free.
 */
static char *
Build(Model *m, const ModelKey *key)
{
	MemoryContext old;
	Builder b;
	TimestampTz started = GetCurrentTimestamp();
	int pinned;

	building =
		AllocSetContextCreate(TopMemoryContext, "aimroute model bytes", ALLOCSET_DEFAULT_SIZES);
	scratch = AllocSetContextCreate(building, "aimroute model build", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(building);
	b.bytes = MemoryContextAllocHuge(building, FIRST_BLOCK);
	b.size = FIRST_BLOCK;
	b.used = 0;
	b.model = m;
	(void) Keep(&b, sizeof(ModelData));
	HEAD(&b)->key = *key;
	b.empty = KeepString(&b, "");

	pinned = SpiConnectPinned();
	LoadSettings(&b);
	LoadBrands(&b);
	LoadProducts(&b);
	LoadDealers(&b);
	LoadDealerLinks(&b);
	LoadTerritories(&b);
	LoadDatedProducts(&b);
	LoadPostalCodes(&b);
	BuildGroups(&b);
	BuildTrees(&b);
	SpiFinishPinned(pinned);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(scratch);
	scratch = NULL;
	b.bytes = repalloc_huge(b.bytes, b.used);
	HEAD(&b)->size = b.used;
	HEAD(&b)->built_at = GetCurrentTimestamp();
	HEAD(&b)->build_ms = (double) (HEAD(&b)->built_at - started) / 1000.0;
	return b.bytes;
}

/*
 * Bind points a backend's handle at a model's bytes, and makes what the
 * backend needs of its own from them: the settings routing reads, with the
 * re-route time zone looked up here.
 */
static void
Bind(Model *m, const char *bytes)
{
	RoutingSettings *s = &m->settings;
	const ModelData *d = (const ModelData *) bytes;
	const ModelRef *countries;

	m->base = bytes;
	m->data = d;
	s->radius_enabled = d->radius_enabled;
	s->radius_m = d->radius_m;
	s->nradius_countries = d->nradius_countries;
	s->radius_countries =
		MemoryContextAlloc(m->context, sizeof(char *) * Max(d->nradius_countries, 1));
	countries = ModelAt(m, d->radius_countries);
	for (int i = 0; i < d->nradius_countries; i++)
		s->radius_countries[i] = ModelText(m, countries[i]);
	s->default_dealer = ModelText(m, d->default_dealer);
	s->product_routing = d->product_routing;
	s->inventory_routing = d->inventory_routing;
	s->round_robin = d->round_robin;
	s->drive_enabled = d->drive_enabled;
	s->drive_network = ModelText(m, d->drive_network);
	s->reroute = d->reroute;
	/* pg_tzset's zones live as long as the backend: keep the pointer. */
	s->reroute.tz = pg_tzset(s->reroute.timezone);
}

/*
 * Reserve adds size bytes to a model being built, zeroed, aligned for any
 * type when align is set (strings need not be); returns their offset.
 */
static ModelRef
Reserve(Builder *b, Size size, bool align)
{
	Size start = align ? MAXALIGN(b->used) : b->used;
	ModelRef ref;

	if (start + size > PG_UINT32_MAX)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						errmsg("the routing configuration is too large for the routing model"),
						errdetail("The model holds at most 4 GB.")));
	if (start + size > b->size)
	{
		Size grown = Min(Max(b->size * 2, start + size), (Size) PG_UINT32_MAX);

		b->bytes = repalloc_huge(b->bytes, grown);
		b->size = grown;
	}
	ref = (ModelRef) start;
	memset(b->bytes + start, 0, size);
	b->used = start + size;
	return ref;
}

/*
 * Keep adds an array or struct of size bytes to a model being built.
 */
static ModelRef
Keep(Builder *b, Size size)
{
	return Reserve(b, size, true);
}

/*
 * KeepString adds a string to a model being built; 0 for NULL.
 */
static ModelRef
KeepString(Builder *b, const char *s)
{
	Size len;
	ModelRef ref;

	if (s == NULL)
		return 0;
	len = strlen(s);
	ref = Reserve(b, len + 1, false);
	memcpy(b->bytes + ref, s, len);
	return ref;
}

/*
 * KeepText adds a text column to a model being built; 0 for NULL.
 */
static ModelRef
KeepText(Builder *b, HeapTuple row, TupleDesc desc, int col)
{
	bool isnull;
	Datum d = SPI_getbinval(row, desc, col, &isnull);
	text *t;
	int len;
	ModelRef ref;

	if (isnull)
		return 0;
	t = DatumGetTextPP(d);
	len = VARSIZE_ANY_EXHDR(t);
	ref = Reserve(b, len + 1, false);
	memcpy(b->bytes + ref, VARDATA_ANY(t), len);
	if ((Pointer) t != DatumGetPointer(d))
		pfree(t);
	return ref;
}

/*
 * FindPostgisFunctions prepares the calls of the PostGIS functions the
 * model makes: the spheroid distance, and a point's latitude and
 * longitude.  They are found by OID in PostGIS's schema (postgis.c), so a
 * role without USAGE on that schema routes all the same.
 */
static void
FindPostgisFunctions(Model *c)
{
	Oid geography = PostgisType("geography");
	Oid geometry = PostgisType("geometry");
	Oid distance_args[3] = { geography, geography, BOOLOID };

	fmgr_info_cxt(PostgisFunction("st_distance", 3, distance_args), &c->distance, c->context);
	fmgr_info_cxt(PostgisFunction("geometry", 1, &geography), &c->to_geometry, c->context);
	fmgr_info_cxt(PostgisFunction("st_x", 1, &geometry), &c->st_x, c->context);
	fmgr_info_cxt(PostgisFunction("st_y", 1, &geometry), &c->st_y, c->context);
}

/*
 * PointLatLon reads a geography point's latitude and longitude; false when
 * PostGIS gives none (an empty point).
 */
static bool
PointLatLon(Model *c, Datum point, double *lat, double *lon)
{
	Datum geometry;
	Datum y;
	Datum x;

	if (!CallNullable(&c->to_geometry, point, &geometry) || !CallNullable(&c->st_y, geometry, &y) ||
		!CallNullable(&c->st_x, geometry, &x))
		return false;
	*lat = DatumGetFloat8(y);
	*lon = DatumGetFloat8(x);
	return true;
}

/*
 * ReadQuery runs a read-only query for Build.  SPI leaves its own memory
 * context current after each call; the model is built in the caller's.
 */
static int
ReadQuery(const char *sql, bool read_only, long count)
{
	MemoryContext context = CurrentMemoryContext;
	int rc = SPI_execute(sql, read_only, count);

	MemoryContextSwitchTo(context);
	return rc;
}

/*
 * Text returns a text column as a C string in the current context, or NULL.
 */
static char *
Text(HeapTuple row, TupleDesc desc, int col)
{
	bool isnull;
	Datum d = SPI_getbinval(row, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * LoadSettings copies what routing needs of aimroute.settings.
 */
static void
LoadSettings(Builder *b)
{
	HeapTuple row;
	TupleDesc desc;
	bool isnull;
	Datum d;
	RerouteSettings reroute;
	ModelRef dealer;

	if (ReadQuery(
			"SELECT radius_enabled, radius_miles::float8, radius_countries,"
			" default_dealer_number, product_routing_enabled, inventory_routing_enabled, " REROUTE_SETTINGS_COLUMNS
			" FROM aimroute.settings",
			true, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		ereport(
			ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("aimroute.settings has no row"),
			 errhint("Reinstall the extension: the settings row is created by CREATE EXTENSION.")));
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	HEAD(b)->radius_enabled = DatumGetBool(SPI_getbinval(row, desc, 1, &isnull));
	HEAD(b)->radius_m = DatumGetFloat8(SPI_getbinval(row, desc, 2, &isnull)) * METERS_PER_MILE;
	d = SPI_getbinval(row, desc, 3, &isnull);
	if (!isnull)
	{
		Datum *elems;
		bool *nulls;
		int n;
		ModelRef countries;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls,
						  &n);
		countries = Keep(b, sizeof(ModelRef) * Max(n, 1));
		HEAD(b)->radius_countries = countries;
		for (int i = 0; i < n; i++)
			if (!nulls[i])
			{
				ModelRef country = KeepString(b, TextDatumGetCString(elems[i]));

				At(b, countries, ModelRef)[HEAD(b)->nradius_countries++] = country;
			}
	}
	dealer = KeepString(b, Text(row, desc, 4));
	HEAD(b)->default_dealer = dealer;
	HEAD(b)->product_routing = DatumGetBool(SPI_getbinval(row, desc, 5, &isnull));
	HEAD(b)->inventory_routing = DatumGetBool(SPI_getbinval(row, desc, 6, &isnull));
	ReadRerouteSettings(row, desc, 7, &reroute);
	reroute.tz = NULL; /* an address in this backend only: Bind looks it up */
	HEAD(b)->reroute = reroute;
	HEAD(b)->round_robin = ReadRoundRobin();
	ReadDrive(b);
}

/*
 * ReadDrive copies settings.drive_distance_enabled and drive_network; a
 * database not updated from 0.1.0 yet has neither, and measures as the
 * crow flies.
 */
static void
ReadDrive(Builder *b)
{
	char *network;
	ModelRef ref;

	if (!AimrouteHasColumn("settings", "drive_network"))
		return;
	if (ReadQuery("SELECT drive_network FROM aimroute.settings"
				  " WHERE drive_distance_enabled AND drive_network IS NOT NULL",
				  true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read settings.drive_distance_enabled");
	if (SPI_processed != 1)
		return;
	network = Text(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	ref = KeepString(b, network);
	HEAD(b)->drive_enabled = true;
	HEAD(b)->drive_network = ref;
}

/*
 * ReadRoundRobin tells whether settings.tie_break is round_robin; a
 * database not updated from 0.1.0 yet has no tie_break, and breaks ties by
 * dealer number.
 */
static bool
ReadRoundRobin(void)
{
	if (!AimrouteHasColumn("settings", "tie_break"))
		return false;
	if (ReadQuery("SELECT FROM aimroute.settings WHERE tie_break = 'round_robin'", true, 1) !=
		SPI_OK_SELECT)
		elog(ERROR, "could not read settings.tie_break");
	return SPI_processed == 1;
}

/*
 * KeepTextColumn keeps column col of every row of SPI_tuptable, as an
 * array of strings; returns the array.
 */
static ModelRef
KeepTextColumn(Builder *b, int col)
{
	ModelRef array = Keep(b, sizeof(ModelRef) * Max(SPI_processed, 1));

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		ModelRef s = KeepText(b, SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col);

		At(b, array, ModelRef)[i] = s;
	}
	return array;
}

/*
 * LoadBrands copies aimroute.brands, sorted by code in byte order.
 */
static void
LoadBrands(Builder *b)
{
	ModelRef codes;
	ModelRef names;

	if (ReadQuery("SELECT brand_code, name FROM aimroute.brands ORDER BY brand_code COLLATE \"C\"",
				  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read aimroute.brands");
	codes = KeepTextColumn(b, 1);
	names = KeepTextColumn(b, 2);
	HEAD(b)->nbrands = SPI_processed;
	HEAD(b)->brand_codes = codes;
	HEAD(b)->brand_names = names;
}

/*
 * LoadProducts lists every product code of assignments and stock, sorted.
 */
static void
LoadProducts(Builder *b)
{
	int n;
	ModelRef codes;
	ModelRef assigned;
	ModelRef nassigned;
	ModelRef stocked;
	ModelRef nstocked;

	if (ReadQuery("SELECT code FROM (SELECT product_code FROM aimroute.product_assignments"
				  " UNION SELECT product_code FROM aimroute.inventory WHERE quantity > 0) p(code)"
				  " ORDER BY code COLLATE \"C\"",
				  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the product codes");
	n = SPI_processed;
	codes = KeepTextColumn(b, 1);
	assigned = Keep(b, sizeof(ModelRef) * Max(n, 1));
	nassigned = Keep(b, sizeof(int) * Max(n, 1));
	stocked = Keep(b, sizeof(ModelRef) * Max(n, 1));
	nstocked = Keep(b, sizeof(int) * Max(n, 1));
	HEAD(b)->nproducts = n;
	HEAD(b)->product_codes = codes;
	HEAD(b)->assigned = assigned;
	HEAD(b)->nassigned = nassigned;
	HEAD(b)->stocked = stocked;
	HEAD(b)->nstocked = nstocked;
}

/*
 * LoadDealers copies aimroute.dealers, sorted by number in byte order (the
 * tie-break order of routing), with each location as a unit vector and
 * its daily lead cap.
 */
static void
LoadDealers(Builder *b)
{
	const char *sql = "SELECT dealer_number, country, dealer_group, active_for_sales, location, %s"
					  " FROM aimroute.dealers ORDER BY dealer_number COLLATE \"C\"";
	ModelRef dealers;

	/* A database not updated from 0.1.0 yet has no daily_lead_cap: no caps. */
	sql = psprintf(sql, AimrouteHasColumn("dealers", "daily_lead_cap") ? "daily_lead_cap"
																	   : "NULL::integer");
	if (ReadQuery(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read aimroute.dealers");
	dealers = Keep(b, sizeof(ModelDealer) * Max(SPI_processed, 1));
	HEAD(b)->ndealers = SPI_processed;
	HEAD(b)->dealers = dealers;
	for (int i = 0; i < (int) SPI_processed; i++)
	{
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool null_location;
		Datum location = SPI_getbinval(row, desc, 5, &null_location);
		ModelDealer d;
		double lat;
		double lon;
		bool isnull;

		memset(&d, 0, sizeof(d));
		d.number = KeepText(b, row, desc, 1);
		d.country = KeepText(b, row, desc, 2);
		d.group = KeepText(b, row, desc, 3);
		d.active = DatumGetBool(SPI_getbinval(row, desc, 4, &isnull)) && !isnull;
		d.daily_lead_cap = DatumGetInt32(SPI_getbinval(row, desc, 6, &isnull));
		if (isnull)
			d.daily_lead_cap = 0;
		if (!null_location)
			location = PointerGetDatum(PG_DETOAST_DATUM(location));
		if (!null_location && PointLatLon(b->model, location, &lat, &lon))
		{
			Size size = VARSIZE_ANY(DatumGetPointer(location));

			d.has_location = true;
			d.location = Keep(b, size);
			memcpy(At(b, d.location, char), DatumGetPointer(location), size);
			UnitVector(lat, lon, d.xyz);
		}
		At(b, dealers, ModelDealer)[i] = d;
	}
	SPI_freetuptable(SPI_tuptable);
}

/* The links of a dealer LoadDealerLinks reads: query, per-dealer list. */
typedef enum LinkKind
{
	LINK_BRANDS,
	LINK_PRODUCTS,
	LINK_STOCK
} LinkKind;

/*
 * LinkList returns where a dealer keeps one kind of link, and its length.
 */
static ModelRef *
LinkList(ModelDealer *d, LinkKind kind, int **count)
{
	if (kind == LINK_BRANDS)
	{
		*count = &d->nbrands;
		return &d->brands;
	}
	if (kind == LINK_PRODUCTS)
	{
		*count = &d->nproducts;
		return &d->products;
	}
	*count = &d->nstock;
	return &d->stock;
}

/*
 * LoadLinks reads one kind of link (dealer, code) into each dealer's list,
 * unsorted; a link to a dealer or code the model does not hold is left out.
 */
static void
LoadLinks(Builder *b, LinkKind kind, const char *sql)
{
	MemoryContext old = MemoryContextSwitchTo(scratch);
	int ndealers = HEAD(b)->ndealers;
	int *count;
	int *target;

	if (ReadQuery(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read \"%s\"", sql);
	count = palloc0(sizeof(int) * Max(ndealers, 1));
	target = palloc(sizeof(int) * 2 * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char *dealer = Text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char *code = Text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		int di = DealerIndex(b->bytes, HEAD(b), dealer);
		int ci = kind == LINK_BRANDS ? FindText(b->bytes, At(b, HEAD(b)->brand_codes, ModelRef),
												HEAD(b)->nbrands, code)
									 : FindText(b->bytes, At(b, HEAD(b)->product_codes, ModelRef),
												HEAD(b)->nproducts, code);

		target[2 * i] = di;
		target[2 * i + 1] = ci;
		if (di >= 0 && ci >= 0)
			count[di]++;
	}
	for (int d = 0; d < ndealers; d++)
	{
		int *n;
		ModelRef list;

		if (count[d] == 0)
			continue;
		list = Keep(b, sizeof(int) * count[d]);
		*LinkList(&At(b, HEAD(b)->dealers, ModelDealer)[d], kind, &n) = list;
	}
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		int *n;
		ModelRef *list;

		if (target[2 * i] < 0 || target[2 * i + 1] < 0)
			continue;
		list = LinkList(&At(b, HEAD(b)->dealers, ModelDealer)[target[2 * i]], kind, &n);
		At(b, *list, int)[(*n)++] = target[2 * i + 1];
	}
	SPI_freetuptable(SPI_tuptable);
	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch);
}

/*
 * LoadDealerLinks gives each dealer its brands, product assignments and
 * stock, sorted, and each product its dealers, in dealer order.
 */
static void
LoadDealerLinks(Builder *b)
{
	int ndealers = HEAD(b)->ndealers;
	int nproducts = HEAD(b)->nproducts;

	LoadLinks(b, LINK_BRANDS, "SELECT dealer_number, brand_code FROM aimroute.dealer_brands");
	/* One link per dealer and product, however many periods it has. */
	LoadLinks(b, LINK_PRODUCTS,
			  "SELECT DISTINCT dealer_number, product_code FROM aimroute.product_assignments");
	LoadLinks(b, LINK_STOCK,
			  "SELECT dealer_number, product_code FROM aimroute.inventory WHERE quantity > 0");
	for (int di = 0; di < ndealers; di++)
	{
		ModelDealer *d = &At(b, HEAD(b)->dealers, ModelDealer)[di];
		int *nassigned = At(b, HEAD(b)->nassigned, int);
		int *nstocked = At(b, HEAD(b)->nstocked, int);

		qsort(At(b, d->brands, int), d->nbrands, sizeof(int), CompareInts);
		qsort(At(b, d->products, int), d->nproducts, sizeof(int), CompareInts);
		qsort(At(b, d->stock, int), d->nstock, sizeof(int), CompareInts);
		for (int i = 0; i < d->nproducts; i++)
			nassigned[At(b, d->products, int)[i]]++;
		for (int i = 0; i < d->nstock; i++)
			nstocked[At(b, d->stock, int)[i]]++;
	}
	for (int p = 0; p < nproducts; p++)
	{
		ModelRef assigned = Keep(b, sizeof(int) * At(b, HEAD(b)->nassigned, int)[p]);
		ModelRef stocked = Keep(b, sizeof(int) * At(b, HEAD(b)->nstocked, int)[p]);

		At(b, HEAD(b)->assigned, ModelRef)[p] = assigned;
		At(b, HEAD(b)->stocked, ModelRef)[p] = stocked;
		At(b, HEAD(b)->nassigned, int)[p] = 0;
		At(b, HEAD(b)->nstocked, int)[p] = 0;
	}
	for (int di = 0; di < ndealers; di++)
	{
		const ModelDealer *d = &At(b, HEAD(b)->dealers, ModelDealer)[di];
		const ModelRef *assigned = At(b, HEAD(b)->assigned, ModelRef);
		const ModelRef *stocked = At(b, HEAD(b)->stocked, ModelRef);
		int *nassigned = At(b, HEAD(b)->nassigned, int);
		int *nstocked = At(b, HEAD(b)->nstocked, int);

		for (int i = 0; i < d->nproducts; i++)
		{
			int p = At(b, d->products, int)[i];

			At(b, assigned[p], int)[nassigned[p]++] = di;
		}
		for (int i = 0; i < d->nstock; i++)
		{
			int p = At(b, d->stock, int)[i];

			At(b, stocked[p], int)[nstocked[p]++] = di;
		}
	}
}

/*
 * CompareInts orders ints for qsort.
 */
static int
CompareInts(const void *a, const void *b)
{
	int x = *(const int *) a;
	int y = *(const int *) b;

	return (x > y) - (x < y);
}

/*
 * CompareTerritories orders territories by country, kind and code; arg is
 * the model's bytes.
 */
static int
CompareTerritories(const void *a, const void *b, void *arg)
{
	const char *base = arg;
	const ModelTerritory *x = a;
	const ModelTerritory *y = b;
	int cmp = strcmp(base + x->country, base + y->country);

	if (cmp == 0)
		cmp = (int) x->kind - (int) y->kind;
	if (cmp == 0)
		cmp = strcmp(base + x->code, base + y->code);
	if (cmp == 0)
		cmp = x->dealer - y->dealer;
	return cmp;
}

/*
 * KindOrder encodes a territory kind so that it sorts in the order of the
 * explanation: postal, county, state, country.
 */
static char
KindOrder(const char *kind)
{
	if (strcmp(kind, "postal") == 0)
		return 1;
	if (strcmp(kind, "county") == 0)
		return 2;
	if (strcmp(kind, "state") == 0)
		return 3;
	return 4;
}

/*
 * LoadTerritories copies aimroute.territories, sorted for lookup.
 */
static void
LoadTerritories(Builder *b)
{
	int n = 0;
	ModelRef territories;

	/* A database not updated from 0.1.0 yet has no periods: every row applies always. */
	if (ReadQuery(
			AimrouteHasColumn("territories", "valid_to")
				? "SELECT country, kind, code, brand_code, dealer_number, valid_from, valid_to"
				  " FROM aimroute.territories"
				: "SELECT country, kind, code, brand_code, dealer_number, NULL::timestamptz,"
				  " NULL::timestamptz FROM aimroute.territories",
			true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read aimroute.territories");
	territories = Keep(b, sizeof(ModelTerritory) * Max(SPI_processed, 1));
	HEAD(b)->territories = territories;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		ModelTerritory t = { 0 };
		MemoryContext old = MemoryContextSwitchTo(scratch);
		char *brand = Text(row, desc, 4);
		bool branded = brand != NULL;

		t.kind = KindOrder(Text(row, desc, 2));
		t.dealer = DealerIndex(b->bytes, HEAD(b), Text(row, desc, 5));
		t.brand = branded ? FindText(b->bytes, At(b, HEAD(b)->brand_codes, ModelRef),
									 HEAD(b)->nbrands, brand)
						  : -1;
		MemoryContextSwitchTo(old);
		MemoryContextReset(scratch);
		/* A brand no longer in aimroute.brands can match no lead. */
		if (t.dealer < 0 || (branded && t.brand < 0))
			continue;
		t.country = KeepText(b, row, desc, 1);
		t.code = t.kind == 4 ? b->empty : KeepText(b, row, desc, 3);
		TIMESTAMP_NOBEGIN(t.valid_from);
		TIMESTAMP_NOEND(t.valid_to);
		t.valid_from = PeriodBound(row, desc, 6, t.valid_from);
		t.valid_to = PeriodBound(row, desc, 7, t.valid_to);
		if (ModelTerritoryDated(&t))
			HEAD(b)->dated_territories = true;
		At(b, territories, ModelTerritory)[n++] = t;
	}
	SPI_freetuptable(SPI_tuptable);
	HEAD(b)->nterritories = n;
	qsort_arg(At(b, territories, ModelTerritory), n, sizeof(ModelTerritory), CompareTerritories,
			  b->bytes);
}

/*
 * PeriodBound reads a bound of a period; open when it is NULL.
 */
static TimestampTz
PeriodBound(HeapTuple row, TupleDesc desc, int col, TimestampTz open)
{
	bool isnull;
	Datum d = SPI_getbinval(row, desc, col, &isnull);

	return isnull ? open : DatumGetTimestampTz(d);
}

/*
 * CompareDatedProducts orders product assignment periods by dealer and
 * product.
 */
static int
CompareDatedProducts(const void *a, const void *b)
{
	const ModelDatedProduct *x = a;
	const ModelDatedProduct *y = b;

	if (x->dealer != y->dealer)
		return x->dealer < y->dealer ? -1 : 1;
	return (x->product > y->product) - (x->product < y->product);
}

/*
 * LoadDatedProducts copies the periods of the product assignments of each
 * dealer and product with a period that is not open, every period of them:
 * a dealer and product with open periods only are in the dealer's list
 * (LoadDealerLinks) and apply always, at no cost.
 */
static void
LoadDatedProducts(Builder *b)
{
	int n = 0;
	ModelRef dated;

	HEAD(b)->ndated_products = 0;
	if (!AimrouteHasColumn("product_assignments", "valid_to"))
		return;
	if (ReadQuery("SELECT a.dealer_number, a.product_code, a.valid_from, a.valid_to"
				  " FROM aimroute.product_assignments a"
				  " WHERE EXISTS (SELECT FROM aimroute.product_assignments p"
				  " WHERE p.dealer_number = a.dealer_number AND p.product_code = a.product_code"
				  " AND (p.valid_from <> '-infinity' OR p.valid_to IS NOT NULL))",
				  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read aimroute.product_assignments");
	if (SPI_processed == 0)
		return;
	dated = Keep(b, sizeof(ModelDatedProduct) * SPI_processed);
	HEAD(b)->dated_products = dated;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		ModelDatedProduct p = { 0 };
		MemoryContext old = MemoryContextSwitchTo(scratch);

		p.dealer = DealerIndex(b->bytes, HEAD(b), Text(row, desc, 1));
		p.product = FindText(b->bytes, At(b, HEAD(b)->product_codes, ModelRef), HEAD(b)->nproducts,
							 Text(row, desc, 2));
		MemoryContextSwitchTo(old);
		MemoryContextReset(scratch);
		if (p.dealer < 0 || p.product < 0)
			continue;
		TIMESTAMP_NOBEGIN(p.valid_from);
		TIMESTAMP_NOEND(p.valid_to);
		p.valid_from = PeriodBound(row, desc, 3, p.valid_from);
		p.valid_to = PeriodBound(row, desc, 4, p.valid_to);
		At(b, dated, ModelDatedProduct)[n++] = p;
	}
	SPI_freetuptable(SPI_tuptable);
	HEAD(b)->ndated_products = n;
	qsort(At(b, dated, ModelDatedProduct), n, sizeof(ModelDatedProduct), CompareDatedProducts);
}

/*
 * PostalHash hashes a country and postal code: the same in every backend,
 * as the slots of a shared model need.
 */
static uint32
PostalHash(const char *country, const char *code)
{
	return hash_combine(hash_bytes((const unsigned char *) country, strlen(country)),
						hash_bytes((const unsigned char *) code, strlen(code)));
}

/*
 * LoadPostalCodes copies aimroute.postal_codes, each centre point with its
 * place on the unit sphere, into a hash table of open addressing (linear
 * probing): a lead's code is found in one or two probes.  Each row is kept
 * next to its strings and centre point, so that finding a code touches
 * little more than its slot and its row.
 */
static void
LoadPostalCodes(Builder *b)
{
	ModelRef slots;
	uint64 nslots = 16; /* too many for the model's 4 GB: Keep says so */
	int n = 0;

	if (ReadQuery("SELECT country, postal_code, place_name, state_code, county, centroid"
				  " FROM aimroute.postal_codes",
				  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read aimroute.postal_codes");
	while (nslots < SPI_processed * 2)
		nslots *= 2;
	slots = Keep(b, sizeof(PostalSlot) * nslots);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple tuple = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		PostalRow p = { 0 };
		ModelRef row;
		bool isnull;
		Datum centroid = SPI_getbinval(tuple, desc, 6, &isnull);
		MemoryContext old = MemoryContextSwitchTo(scratch);
		double lat;
		double lon;
		uint32 hash;
		uint32 at;

		/* Country and code are NOT NULL: a row without them could match no lead. */
		if (heap_attisnull(tuple, 1, desc) || heap_attisnull(tuple, 2, desc))
		{
			MemoryContextSwitchTo(old);
			continue;
		}
		row = Keep(b, sizeof(PostalRow));
		p.country = KeepText(b, tuple, desc, 1);
		p.code = KeepText(b, tuple, desc, 2);
		p.place_name = KeepText(b, tuple, desc, 3);
		p.state_code = KeepText(b, tuple, desc, 4);
		p.county = KeepText(b, tuple, desc, 5);
		if (!isnull)
		{
			centroid = PointerGetDatum(PG_DETOAST_DATUM(centroid));
			if (PointLatLon(b->model, centroid, &lat, &lon))
			{
				Size size = VARSIZE_ANY(DatumGetPointer(centroid));

				p.centroid = Keep(b, size);
				memcpy(At(b, p.centroid, char), DatumGetPointer(centroid), size);
				UnitVector(lat, lon, p.xyz);
			}
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(scratch);
		*At(b, row, PostalRow) = p;

		/* The primary key makes (country, code) unique: no duplicate to find. */
		hash = PostalHash(b->bytes + p.country, b->bytes + p.code);
		for (at = hash & (nslots - 1); At(b, slots, PostalSlot)[at].row != 0;
			 at = (at + 1) & (nslots - 1))
			;
		At(b, slots, PostalSlot)[at] = (PostalSlot){ hash, row };
		n++;
	}
	SPI_freetuptable(SPI_tuptable);
	HEAD(b)->npostal = n;
	HEAD(b)->postal_slots = slots;
	HEAD(b)->npostal_slots = (uint32) nslots;
}

/*
 * CompareGroupMembers orders group members by country, group and dealer;
 * arg is the model's bytes.
 */
static int
CompareGroupMembers(const void *a, const void *b, void *arg)
{
	const char *base = arg;
	const GroupMember *x = a;
	const GroupMember *y = b;
	int cmp = strcmp(base + x->country, base + y->country);

	if (cmp == 0)
		cmp = strcmp(base + x->group, base + y->group);
	if (cmp == 0)
		cmp = x->dealer - y->dealer;
	return cmp;
}

/*
 * BuildGroups lists the members of each dealer group per country.
 */
static void
BuildGroups(Builder *b)
{
	int ndealers = HEAD(b)->ndealers;
	int n = 0;
	ModelRef groups;
	const ModelDealer *dealers;

	for (int i = 0; i < ndealers; i++)
		if (At(b, HEAD(b)->dealers, ModelDealer)[i].group != 0)
			n++;
	groups = Keep(b, sizeof(GroupMember) * Max(n, 1));
	dealers = At(b, HEAD(b)->dealers, ModelDealer);
	n = 0;
	for (int i = 0; i < ndealers; i++)
		if (dealers[i].group != 0)
			At(b, groups, GroupMember)[n++] =
				(GroupMember){ dealers[i].country, dealers[i].group, i };
	HEAD(b)->groups = groups;
	HEAD(b)->ngroups = n;
	qsort_arg(At(b, groups, GroupMember), n, sizeof(GroupMember), CompareGroupMembers, b->bytes);
}

/*
 * CompareTreeEntries orders (country, brand, dealer) triples; arg is the
 * model's bytes.
 */
typedef struct TreeEntry
{
	ModelRef country;
	int brand;
	int dealer;
} TreeEntry;

static int
CompareTreeEntries(const void *a, const void *b, void *arg)
{
	const char *base = arg;
	const TreeEntry *x = a;
	const TreeEntry *y = b;
	int cmp = strcmp(base + x->country, base + y->country);

	if (cmp == 0)
		cmp = x->brand - y->brand;
	if (cmp == 0)
		cmp = x->dealer - y->dealer;
	return cmp;
}

/*
 * BuildTrees builds a 3-d tree per country and brand over the active
 * dealers with a location: the only dealers a nearest-dealer search may
 * return.
 */
static void
BuildTrees(Builder *b)
{
	int ndealers = HEAD(b)->ndealers;
	int n = 0;
	int ntrees = 0;
	TreeEntry *entries;
	ModelRef trees;
	int start;

	for (int i = 0; i < ndealers; i++)
	{
		const ModelDealer *d = &At(b, HEAD(b)->dealers, ModelDealer)[i];

		if (d->active && d->has_location)
			n += d->nbrands;
	}
	entries = MemoryContextAlloc(scratch, sizeof(TreeEntry) * Max(n, 1));
	n = 0;
	for (int i = 0; i < ndealers; i++)
	{
		const ModelDealer *d = &At(b, HEAD(b)->dealers, ModelDealer)[i];

		if (!d->active || !d->has_location)
			continue;
		for (int k = 0; k < d->nbrands; k++)
			entries[n++] = (TreeEntry){ d->country, At(b, d->brands, int)[k], i };
	}
	qsort_arg(entries, n, sizeof(TreeEntry), CompareTreeEntries, b->bytes);
	for (int i = 0; i < n; i++)
		if (i == 0 || entries[i - 1].brand != entries[i].brand ||
			strcmp(b->bytes + entries[i - 1].country, b->bytes + entries[i].country) != 0)
			ntrees++;

	trees = Keep(b, sizeof(BrandTree) * Max(ntrees, 1));
	HEAD(b)->trees = trees;
	HEAD(b)->ntrees = ntrees;
	ntrees = 0;
	for (start = 0; start < n;)
	{
		int end = start;
		int size;
		ModelRef dealer;
		ModelRef pt;
		ModelRef dim;
		BrandTree *bt;
		KdView view;

		while (end < n && entries[end].brand == entries[start].brand &&
			   strcmp(b->bytes + entries[end].country, b->bytes + entries[start].country) == 0)
			end++;
		size = end - start;
		dealer = Keep(b, sizeof(int) * size);
		pt = Keep(b, sizeof(double[3]) * size);
		dim = Keep(b, size);
		bt = &At(b, trees, BrandTree)[ntrees++];
		bt->country = entries[start].country;
		bt->brand = entries[start].brand;
		bt->tree.n = size;
		bt->tree.dealer = dealer;
		bt->tree.pt = pt;
		bt->tree.dim = dim;
		view = TreeView(b->bytes, &bt->tree);
		for (int i = 0; i < size; i++)
		{
			view.dealer[i] = entries[start + i].dealer;
			memcpy(view.pt[i], At(b, HEAD(b)->dealers, ModelDealer)[entries[start + i].dealer].xyz,
				   sizeof(double[3]));
		}
		KdBuild(&view, 0, size);
		start = end;
	}
	pfree(entries);
}

/*
 * TreeView gives the arrays of a tree at their addresses in this backend.
 */
static KdView
TreeView(const char *base, const KdTree *t)
{
	KdView view;

	view.n = t->n;
	view.dealer = (int *) (base + t->dealer);
	view.pt = (double(*)[3])(base + t->pt);
	view.dim = (unsigned char *) (base + t->dim);
	return view;
}

/*
 * KdSwap exchanges two nodes of a tree under construction.
 */
static void
KdSwap(KdView *t, int i, int j)
{
	int dealer = t->dealer[i];
	double pt[3];

	memcpy(pt, t->pt[i], sizeof(pt));
	t->dealer[i] = t->dealer[j];
	memcpy(t->pt[i], t->pt[j], sizeof(pt));
	t->dealer[j] = dealer;
	memcpy(t->pt[j], pt, sizeof(pt));
}

/*
 * KdBuild arranges t's nodes lo..hi-1 as a balanced tree: the median along
 * the widest axis at the middle, smaller values before it, larger after.
 */
static void
KdBuild(KdView *t, int lo, int hi)
{
	int mid = lo + (hi - lo) / 2;
	double min[3] = { INFINITY, INFINITY, INFINITY };
	double max[3] = { -INFINITY, -INFINITY, -INFINITY };
	int axis = 0;
	int left = lo;
	int right = hi - 1;

	if (hi - lo <= 0)
		return;
	for (int i = lo; i < hi; i++)
		for (int k = 0; k < 3; k++)
		{
			min[k] = Min(min[k], t->pt[i][k]);
			max[k] = Max(max[k], t->pt[i][k]);
		}
	for (int k = 1; k < 3; k++)
		if (max[k] - min[k] > max[axis] - min[axis])
			axis = k;

	/* Quickselect the median along the axis. */
	while (left < right)
	{
		double pivot = t->pt[left + (right - left) / 2][axis];
		int i = left;
		int j = right;

		while (i <= j)
		{
			while (t->pt[i][axis] < pivot)
				i++;
			while (t->pt[j][axis] > pivot)
				j--;
			if (i <= j)
				KdSwap(t, i++, j--);
		}
		if (mid <= j)
			right = j;
		else if (mid >= i)
			left = i;
		else
			break;
	}
	t->dim[mid] = (unsigned char) axis;
	KdBuild(t, lo, mid);
	KdBuild(t, mid + 1, hi);
}

/*
 * Distance2 is the squared chord between two unit vectors.
 */
static inline double
Distance2(const double a[3], const double b[3])
{
	double dx = a[0] - b[0];
	double dy = a[1] - b[1];
	double dz = a[2] - b[2];

	return dx * dx + dy * dy + dz * dz;
}

/*
 * KdNearest finds the accepted node closest to q (by chord).
 */
static void
KdNearest(const KdView *t, int lo, int hi, const double q[3], Model *c, const CandidateFilter *f,
		  int *best, double *best_d2)
{
	while (lo < hi)
	{
		int mid = lo + (hi - lo) / 2;
		double diff = q[t->dim[mid]] - t->pt[mid][t->dim[mid]];
		double d2 = Distance2(q, t->pt[mid]);

		if (d2 < *best_d2 && TreeAccepts(c, f, t->dealer[mid]))
		{
			*best = t->dealer[mid];
			*best_d2 = d2;
		}
		/* The near side first, then the far side if it can hold a closer node. */
		if (diff < 0)
		{
			KdNearest(t, lo, mid, q, c, f, best, best_d2);
			if (diff * diff >= *best_d2)
				return;
			lo = mid + 1;
		}
		else
		{
			KdNearest(t, mid + 1, hi, q, c, f, best, best_d2);
			if (diff * diff >= *best_d2)
				return;
			hi = mid;
		}
	}
}

/*
 * TreeAccepts is ModelAccepts for a node of the tree of the filter's
 * country and brand, which holds only active dealers of that country that
 * sell that brand (BuildTrees): what is left to check is the rest of the
 * filter, and usually there is none.  The tree searches call it at every
 * node nearer than the best so far.
 */
static inline bool
TreeAccepts(Model *c, const CandidateFilter *f, int dealer)
{
	if (f->nexcluded == 0 && f->product == FILTER_ANY && f->stock == FILTER_ANY && f->group == NULL)
		return true;
	return PassesRest(c, f, dealer);
}

/*
 * KdRange lists the accepted nodes within squared chord r2 of q.
 */
static void
KdRange(const KdView *t, int lo, int hi, const double q[3], double r2, Model *c,
		const CandidateFilter *f, List **found)
{
	while (lo < hi)
	{
		int mid = lo + (hi - lo) / 2;
		double diff = q[t->dim[mid]] - t->pt[mid][t->dim[mid]];

		if (Distance2(q, t->pt[mid]) <= r2 && TreeAccepts(c, f, t->dealer[mid]))
			*found = lappend_int(*found, t->dealer[mid]);
		if (diff <= 0 || diff * diff <= r2)
			KdRange(t, lo, mid, q, r2, c, f, found);
		if (diff >= 0 || diff * diff <= r2)
			lo = mid + 1;
		else
			return;
	}
}

/*
 * UnitVector places latitude and longitude (degrees) on the unit sphere.
 */
void
UnitVector(double lat, double lon, double xyz[3])
{
	double phi = lat * M_PI / 180.0;
	double lambda = lon * M_PI / 180.0;

	xyz[0] = cos(phi) * cos(lambda);
	xyz[1] = cos(phi) * sin(lambda);
	xyz[2] = sin(phi);
}

/*
 * SphereMeters is the great-circle distance between two unit vectors on the
 * mean-radius sphere.
 */
double
SphereMeters(const double a[3], const double b[3])
{
	double half_chord = sqrt(Distance2(a, b)) / 2.0;

	return 2.0 * EARTH_MEAN_RADIUS_M * asin(Min(half_chord, 1.0));
}

/*
 * ChordFor is the chord of a great-circle distance, a little generous so
 * that rounding never loses a node the sphere distance would keep.
 */
static double
ChordFor(double sphere_m)
{
	double half_angle = sphere_m / (2.0 * EARTH_MEAN_RADIUS_M);

	if (half_angle >= M_PI / 2.0)
		return 2.0 + 1e-9;
	return 2.0 * sin(half_angle) * (1.0 + 1e-9) + 1e-12;
}

/*
 * LowerBound is the one binary search of the model's sorted arrays: the
 * index of the first of n elements of size bytes at base that does not sort
 * before key by cmp(element, key, arg); n when every element does.
 */
static inline int
LowerBound(const void *base, int n, Size size, const void *key,
		   int (*cmp)(const void *element, const void *key, const void *arg), const void *arg)
{
	int lo = 0;
	int hi = n;

	while (lo < hi)
	{
		int mid = lo + (hi - lo) / 2;

		if (cmp((const char *) base + (Size) mid * size, key, arg) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * CompareStringKey orders an element of a sorted string array against a
 * key; arg is the model's bytes.
 */
static int
CompareStringKey(const void *element, const void *key, const void *arg)
{
	return strcmp((const char *) arg + *(const ModelRef *) element, (const char *) key);
}

/*
 * FindText looks a string up in a sorted array of strings; -1 when absent.
 */
static int
FindText(const char *base, const ModelRef *sorted, int n, const char *key)
{
	int i = LowerBound(sorted, n, sizeof(ModelRef), key, CompareStringKey, base);

	return i < n && strcmp(base + sorted[i], key) == 0 ? i : -1;
}

/*
 * CompareIntKey orders ints for LowerBound.
 */
static int
CompareIntKey(const void *element, const void *key, const void *arg)
{
	return CompareInts(element, key);
}

/*
 * Contains tells whether a sorted int array of a model holds value.
 */
static bool
Contains(const char *base, ModelRef sorted, int n, int value)
{
	const int *array = (const int *) (base + sorted);
	int i = LowerBound(array, n, sizeof(int), &value, CompareIntKey, NULL);

	return i < n && array[i] == value;
}

/*
 * CompareDealerKey orders a dealer against a dealer number; arg is the
 * model's bytes.
 */
static int
CompareDealerKey(const void *element, const void *key, const void *arg)
{
	return strcmp((const char *) arg + ((const ModelDealer *) element)->number, (const char *) key);
}

/*
 * DealerIndex finds a dealer in a model's bytes; -1 when there is none.
 */
static int
DealerIndex(const char *base, const ModelData *d, const char *number)
{
	const ModelDealer *dealers = (const ModelDealer *) (base + d->dealers);
	int i = LowerBound(dealers, d->ndealers, sizeof(ModelDealer), number, CompareDealerKey, base);

	return i < d->ndealers && strcmp(base + dealers[i].number, number) == 0 ? i : -1;
}

/*
 * ModelFindDealer returns a dealer's index, -1 when there is none.
 */
int
ModelFindDealer(Model *c, const char *number)
{
	return DealerIndex(c->base, c->data, number);
}

/*
 * ModelFindBrand returns a brand's index, -1 when there is none.
 */
int
ModelFindBrand(Model *c, const char *code)
{
	return code ? FindText(c->base, ModelAt(c, c->data->brand_codes), c->data->nbrands, code) : -1;
}

/*
 * ModelFindProduct returns a product's index, -1 when no dealer is
 * assigned it or has it in stock.
 */
int
ModelFindProduct(Model *c, const char *code)
{
	return code ? FindText(c->base, ModelAt(c, c->data->product_codes), c->data->nproducts, code)
				: -1;
}

/*
 * ModelSells tells whether a dealer sells a brand.
 */
bool
ModelSells(const Model *c, const ModelDealer *d, int brand)
{
	return brand >= 0 && Contains(c->base, d->brands, d->nbrands, brand);
}

/*
 * ModelAccepts tells whether a dealer passes a filter: the candidate
 * condition of a rule.
 */
bool
ModelAccepts(Model *c, const CandidateFilter *f, int dealer)
{
	const ModelDealer *d = ModelDealerAt(c, dealer);

	if (!d->active || !ModelSells(c, d, f->brand))
		return false;
	if (f->country && strcmp(ModelText(c, d->country), f->country) != 0)
		return false;
	return PassesRest(c, f, dealer);
}

/*
 * PassesRest tells whether a dealer passes the filter's exclusions,
 * product, stock and group: all of it but activity, brand and country.
 */
static bool
PassesRest(Model *c, const CandidateFilter *f, int dealer)
{
	const ModelDealer *d = ModelDealerAt(c, dealer);

	for (int i = 0; i < f->nexcluded; i++)
		if (f->excluded[i] == dealer)
			return false;
	if (f->product != FILTER_ANY &&
		(f->product < 0 || !Contains(c->base, d->products, d->nproducts, f->product) ||
		 (c->data->ndated_products > 0 && !ProductValidAt(c, dealer, f->product, f->at))))
		return false;
	if (f->stock != FILTER_ANY &&
		(f->stock < 0 || !Contains(c->base, d->stock, d->nstock, f->stock)))
		return false;
	if (f->group && (d->group == 0 || strcmp(ModelText(c, d->group), f->group) != 0))
		return false;
	return true;
}

/*
 * CompareDatedProductKey orders a product assignment period against a
 * dealer and product.
 */
static int
CompareDatedProductKey(const void *element, const void *key, const void *arg)
{
	return CompareDatedProducts(element, key);
}

/*
 * ProductValidAt tells whether a dealer's assignment of a product applies
 * at an instant: always, unless one of its periods is not open; then when
 * one of its periods holds the instant.
 */
static bool
ProductValidAt(Model *c, int dealer, int product, TimestampTz at)
{
	const ModelDatedProduct *dated = ModelAt(c, c->data->dated_products);
	int n = c->data->ndated_products;
	ModelDatedProduct key = { .dealer = dealer, .product = product };
	int i = LowerBound(dated, n, sizeof(ModelDatedProduct), &key, CompareDatedProductKey, NULL);

	if (i == n || dated[i].dealer != dealer || dated[i].product != product)
		return true;
	for (; i < n && dated[i].dealer == dealer && dated[i].product == product; i++)
		if (dated[i].valid_from <= at &&
			(at < dated[i].valid_to || TIMESTAMP_IS_NOEND(dated[i].valid_to)))
			return true;
	return false;
}

/*
 * ModelDistance measures a dealer's distance to a centre point with
 * PostGIS; NaN when either has no position.
 */
double
ModelDistance(Model *c, int dealer, Datum centroid)
{
	const ModelDealer *d = ModelDealerAt(c, dealer);
	LOCAL_FCINFO(fcinfo, 3);
	Datum result;

	if (!d->has_location || centroid == (Datum) 0)
		return NAN;
	InitFunctionCallInfoData(*fcinfo, &c->distance, 3, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(ModelAt(c, d->location));
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = centroid;
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = BoolGetDatum(true);
	fcinfo->args[2].isnull = false;
	result = FunctionCallInvoke(fcinfo);
	return fcinfo->isnull ? NAN : DatumGetFloat8(result);
}

/*
 * CompareCandidates orders candidates by sphere distance, then dealer
 * number.
 */
static int
CompareCandidates(const void *a, const void *b)
{
	const Candidate *x = a;
	const Candidate *y = b;

	if (x->sphere_m != y->sphere_m)
		return x->sphere_m < y->sphere_m ? -1 : 1;
	return x->dealer - y->dealer;
}

/* What FindTree looks for. */
typedef struct TreeKey
{
	const char *country;
	int brand;
} TreeKey;

/*
 * CompareTreeKey orders a tree by country and brand against a key; arg is
 * the model's bytes.
 */
static int
CompareTreeKey(const void *element, const void *key, const void *arg)
{
	const BrandTree *x = element;
	const TreeKey *y = key;
	int cmp = strcmp((const char *) arg + x->country, y->country);

	return cmp != 0 ? cmp : x->brand - y->brand;
}

/*
 * FindTree returns the tree of the filter's country and brand, NULL when
 * no active dealer with a location there sells the brand.
 */
static const KdTree *
FindTree(Model *c, const CandidateFilter *f)
{
	TreeKey key = { f->country, f->brand };
	const BrandTree *trees = ModelAt(c, c->data->trees);
	int n = c->data->ntrees;
	int i = LowerBound(trees, n, sizeof(BrandTree), &key, CompareTreeKey, c->base);

	return i < n && CompareTreeKey(&trees[i], &key, c->base) == 0 ? &trees[i].tree : NULL;
}

/* What GroupRange looks for. */
typedef struct GroupKey
{
	const char *country;
	const char *group;
} GroupKey;

/*
 * CompareGroupKey orders a group member against a country and group; arg is
 * the model's bytes.
 */
static int
CompareGroupKey(const void *element, const void *key, const void *arg)
{
	const GroupMember *x = element;
	const GroupKey *y = key;
	int cmp = strcmp((const char *) arg + x->country, y->country);

	return cmp != 0 ? cmp : strcmp((const char *) arg + x->group, y->group);
}

/*
 * GroupRange finds the members of one group in one country.
 */
static void
GroupRange(Model *c, const char *country, const char *group, int *first, int *last)
{
	GroupKey key = { country, group };
	const GroupMember *groups = ModelAt(c, c->data->groups);
	int n = c->data->ngroups;
	int i = LowerBound(groups, n, sizeof(GroupMember), &key, CompareGroupKey, c->base);

	*first = i;
	while (i < n && CompareGroupKey(&groups[i], &key, c->base) == 0)
		i++;
	*last = i;
}

/*
 * GatherListed gathers the located dealers passing the filter from a short
 * list of the only dealers that can: the group's members, or the dealers
 * with the product in stock or assigned, when they are few against the
 * tree.  Returns false, gathering nothing, when there is no such list and
 * the tree is to be searched instead.
 */
static bool
GatherListed(Model *c, const CandidateFilter *f, const KdTree *tree, List **found)
{
	const int *list;
	int n;
	const int *nstocked = ModelAt(c, c->data->nstocked);
	const int *nassigned = ModelAt(c, c->data->nassigned);

	if (f->group != NULL)
	{
		const GroupMember *groups = ModelAt(c, c->data->groups);
		int first;
		int last;

		GroupRange(c, f->country, f->group, &first, &last);
		for (int i = first; i < last; i++)
			if (ModelDealerAt(c, groups[i].dealer)->has_location &&
				ModelAccepts(c, f, groups[i].dealer))
				*found = lappend_int(*found, groups[i].dealer);
		return true;
	}
	if (f->stock >= 0 && nstocked[f->stock] < tree->n / 4)
	{
		list = ModelAt(c, ((const ModelRef *) ModelAt(c, c->data->stocked))[f->stock]);
		n = nstocked[f->stock];
	}
	else if (f->product >= 0 && nassigned[f->product] < tree->n / 4)
	{
		list = ModelAt(c, ((const ModelRef *) ModelAt(c, c->data->assigned))[f->product]);
		n = nassigned[f->product];
	}
	else
		return false;
	for (int i = 0; i < n; i++)
		if (ModelDealerAt(c, list[i])->has_location && ModelAccepts(c, f, list[i]))
			*found = lappend_int(*found, list[i]);
	return true;
}

/*
 * NearestOf returns the dealer of a list closest to q on the sphere (the
 * lower number on a tie), -1 when the list is empty.
 */
static int
NearestOf(Model *c, List *found, const double q[3])
{
	int nearest = -1;
	double nearest_sphere = INFINITY;
	ListCell *lc;

	foreach (lc, found)
	{
		double s = SphereMeters(q, ModelDealerAt(c, lfirst_int(lc))->xyz);

		if (nearest < 0 || s < nearest_sphere || (s == nearest_sphere && lfirst_int(lc) < nearest))
		{
			nearest = lfirst_int(lc);
			nearest_sphere = s;
		}
	}
	return nearest;
}

/*
 * ModelNearest lists, closest first on the sphere, every dealer passing the
 * filter that can be the closest one on the spheroid within limit_m: those
 * whose sphere distance, less the margin, is within the spheroid distance
 * of the sphere-closest one (or within the limit, when that one is beyond
 * it).  The caller measures them in order and stops when none left can win.
 */
int
ModelNearest(Model *c, const CandidateFilter *f, const double xyz[3], Datum centroid,
			 double limit_m, Candidate **out)
{
	return Candidates(c, f, xyz, centroid, limit_m, false, out);
}

/*
 * ModelWithin lists, closest first on the sphere, every dealer passing the
 * filter that may be within limit_m on the spheroid: the candidates of
 * Drive Distance, which are measured by road (drive.c).
 */
int
ModelWithin(Model *c, const CandidateFilter *f, const double xyz[3], Datum centroid, double limit_m,
			Candidate **out)
{
	return Candidates(c, f, xyz, centroid, limit_m, true, out);
}

/*
 * Candidates is ModelNearest, or with all set ModelWithin.
 */
static int
Candidates(Model *c, const CandidateFilter *f, const double xyz[3], Datum centroid, double limit_m,
		   bool all, Candidate **out)
{
	const KdTree *tree = FindTree(c, f);
	KdView view;
	List *found = NIL;
	bool listed;
	int nearest = -1;
	double nearest_m;
	double bound;
	int n = 0;
	ListCell *lc;

	*out = NULL;
	if (tree == NULL || f->product == FILTER_NOTHING || f->stock == FILTER_NOTHING)
		return 0;
	view = TreeView(c->base, tree);
	listed = GatherListed(c, f, tree, &found);
	if (listed)
		nearest = NearestOf(c, found, xyz);
	else
	{
		double best_d2 = INFINITY;

		KdNearest(&view, 0, view.n, xyz, c, f, &nearest, &best_d2);
	}
	if (nearest < 0 ||
		SphereMeters(xyz, ModelDealerAt(c, nearest)->xyz) * (1.0 - SPHERE_MARGIN) > limit_m)
		return 0;

	nearest_m = all ? NAN : ModelDistance(c, nearest, centroid);
	bound = (!isnan(nearest_m) && nearest_m <= limit_m) ? nearest_m : limit_m;
	if (!listed)
	{
		double chord = ChordFor(bound / (1.0 - SPHERE_MARGIN));

		KdRange(&view, 0, view.n, xyz, chord * chord, c, f, &found);
	}
	*out = palloc(sizeof(Candidate) * Max(list_length(found), 1));
	foreach (lc, found)
	{
		double s = SphereMeters(xyz, ModelDealerAt(c, lfirst_int(lc))->xyz);

		if (s * (1.0 - SPHERE_MARGIN) <= bound)
			(*out)[n++] = (Candidate){ lfirst_int(lc), s };
	}
	list_free(found);
	qsort(*out, n, sizeof(Candidate), CompareCandidates);
	return n;
}

/*
 * ModelFirstOfGroup returns the lowest-numbered dealer of a group that
 * passes the filter, -1 when none does.
 */
int
ModelFirstOfGroup(Model *c, const CandidateFilter *f)
{
	const GroupMember *groups = ModelAt(c, c->data->groups);
	int first;
	int last;

	GroupRange(c, f->country, f->group, &first, &last);
	for (int i = first; i < last; i++)
		if (ModelAccepts(c, f, groups[i].dealer))
			return groups[i].dealer;
	return -1;
}

/* What TerritoryRange looks for. */
typedef struct TerritoryKey
{
	const char *country;
	char kind;
	const char *code;
} TerritoryKey;

/*
 * CompareTerritoryKey orders a territory against a country, kind and code;
 * arg is the model's bytes.
 */
static int
CompareTerritoryKey(const void *element, const void *key, const void *arg)
{
	const ModelTerritory *x = element;
	const TerritoryKey *y = key;
	int cmp = strcmp((const char *) arg + x->country, y->country);

	if (cmp == 0)
		cmp = (int) x->kind - (int) y->kind;
	if (cmp == 0)
		cmp = strcmp((const char *) arg + x->code, y->code);
	return cmp;
}

/*
 * TerritoryRange finds the territories of one country, kind and code.
 */
static void
TerritoryRange(Model *c, const char *country, char kind, const char *code, int *first, int *last)
{
	TerritoryKey key = { country, kind, code };
	const ModelTerritory *territories = ModelAt(c, c->data->territories);
	int n = c->data->nterritories;
	int i = LowerBound(territories, n, sizeof(ModelTerritory), &key, CompareTerritoryKey, c->base);

	*first = i;
	while (i < n && CompareTerritoryKey(&territories[i], &key, c->base) == 0)
		i++;
	*last = i;
}

/*
 * ModelTerritories lists the territories containing a lead for a
 * brand: its postal code, county, state and country (any argument may be
 * NULL), in that order.
 */
int
ModelTerritories(Model *c, const char *country, const char *postal, const char *county,
				 const char *state, int brand, const ModelTerritory ***out)
{
	const char *codes[4] = { postal, county, state, "" };
	const ModelTerritory *territories = ModelAt(c, c->data->territories);
	int n = 0;
	int cap = 16;
	const ModelTerritory **found = palloc(sizeof(ModelTerritory *) * cap);

	for (int k = 0; k < 4; k++)
	{
		int first;
		int last;

		if (codes[k] == NULL)
			continue;
		TerritoryRange(c, country, (char) (k + 1), codes[k], &first, &last);
		for (int i = first; i < last; i++)
		{
			const ModelTerritory *t = &territories[i];

			if (t->brand != -1 && t->brand != brand)
				continue;
			if (n == cap)
				found = repalloc(found, sizeof(ModelTerritory *) * (cap *= 2));
			found[n++] = t;
		}
	}
	*out = found;
	return n;
}

/*
 * CallNullable calls a one-argument function; false when it returns NULL.
 */
static bool
CallNullable(FmgrInfo *fn, Datum arg, Datum *result)
{
	LOCAL_FCINFO(fcinfo, 1);

	InitFunctionCallInfoData(*fcinfo, fn, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = arg;
	fcinfo->args[0].isnull = false;
	*result = FunctionCallInvoke(fcinfo);
	return !fcinfo->isnull;
}

/*
 * FindPostal finds a postal code of a country in the model; NULL when
 * aimroute.postal_codes does not have it.
 */
static const PostalRow *
FindPostal(Model *c, const char *country, const char *code)
{
	const PostalSlot *slots = ModelAt(c, c->data->postal_slots);
	uint32 mask = c->data->npostal_slots - 1;
	uint32 hash = PostalHash(country, code);

	for (uint32 at = hash & mask; slots[at].row != 0; at = (at + 1) & mask)
	{
		const PostalRow *row = ModelAt(c, slots[at].row);

		if (slots[at].hash == hash && strcmp(c->base + row->code, code) == 0 &&
			strcmp(c->base + row->country, country) == 0)
			return row;
	}
	return NULL;
}

/*
 * PlaceInModel finds a postal code (normalized lexically) of a country in
 * the model, with the fallback of PostalResolve (a Canadian code's FSA)
 * when the code is not known.  What it fills in place points into lexical
 * or the model's bytes.
 */
static void
PlaceInModel(Model *c, const char *country, const char *lexical, Place *place)
{
	const PostalRow *row = FindPostal(c, country, lexical);
	char *fallback;

	memset(place, 0, sizeof(*place));
	place->code = lexical;
	if (row == NULL && (fallback = PostalFallback(country, lexical)) != NULL)
	{
		place->code = fallback;
		row = FindPostal(c, country, fallback);
	}
	if (row == NULL)
		return;
	place->known = true;
	place->place_name = ModelText(c, row->place_name);
	place->state_code = ModelText(c, row->state_code);
	place->county = ModelText(c, row->county);
	if (row->centroid != 0)
	{
		place->has_centroid = true;
		place->centroid = PointerGetDatum(ModelAt(c, row->centroid));
		memcpy(place->xyz, row->xyz, sizeof(place->xyz));
	}
}

/*
 * A postal code looked up lately, copied into the session's memory with
 * what routing reads of it.  The codes a session meets again and again
 * (one web form's region, one dealer's market) are found here without
 * touching the model's postal codes: megabytes, where each look-up is a
 * cache and TLB miss or two.
 */
typedef struct RecentKey
{
	char country[4];
	char lexical[16]; /* the code as asked for, zero-padded */
} RecentKey;

typedef struct RecentPlace
{
	RecentKey key;
	Place place; /* its strings and centre point are in bytes */
	char bytes[200];
} RecentPlace;

/*
 * CopyInto copies size bytes to the free part of a recent place's bytes;
 * NULL when they do not fit.
 */
static const char *
CopyInto(RecentPlace *r, Size *used, const void *data, Size size)
{
	char *to = r->bytes + *used;

	if (*used + size > sizeof(r->bytes))
		return NULL;
	memcpy(to, data, size);
	*used += size;
	return to;
}

/*
 * CopyText copies a string, NULL for NULL, to a recent place's bytes; false
 * when it does not fit.
 */
static bool
CopyText(RecentPlace *r, Size *used, const char **s)
{
	if (*s == NULL)
		return true;
	*s = CopyInto(r, used, *s, strlen(*s) + 1);
	return *s != NULL;
}

/*
 * Remember keeps a place looked up among the recent places, when it fits.
 */
static void
Remember(Model *c, const RecentKey *key, const Place *place)
{
	RecentPlace *r;
	Size used = 0;
	Place copy = *place;
	bool fits;

	if (hash_get_num_entries(c->recent) >= RECENT_PLACES)
	{
		hash_destroy(c->recent);
		c->recent = NewRecentPlaces(c->context);
	}
	r = hash_search(c->recent, key, HASH_ENTER, NULL);
	fits = CopyText(r, &used, &copy.code) && CopyText(r, &used, &copy.place_name) &&
		   CopyText(r, &used, &copy.state_code) && CopyText(r, &used, &copy.county);
	if (fits && copy.has_centroid)
	{
		/* The centre point's varlena, aligned like a palloc'd one. */
		used = MAXALIGN(used);
		copy.centroid = PointerGetDatum(CopyInto(r, &used, DatumGetPointer(place->centroid),
												 VARSIZE_ANY(DatumGetPointer(place->centroid))));
		fits = DatumGetPointer(copy.centroid) != NULL;
	}
	if (!fits)
	{
		hash_search(c->recent, key, HASH_REMOVE, NULL);
		return;
	}
	r->place = copy;
}

/*
 * NewRecentPlaces starts an empty table of recent places.
 */
static HTAB *
NewRecentPlaces(MemoryContext context)
{
	HASHCTL ctl;

	ctl.keysize = sizeof(RecentKey);
	ctl.entrysize = sizeof(RecentPlace);
	ctl.hcxt = context;
	return hash_create("aimroute recent postal codes", 256, &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * ModelPlace finds a postal code (normalized lexically) of a country, with
 * the fallback of PostalResolve (a Canadian code's FSA) when the code is
 * not known: in the session's recent places, else in the model, and keeps
 * it among the recent places.  What it fills in place is valid until the
 * next ModelPlace.
 */
void
ModelPlace(Model *c, const char *country, const char *lexical, Place *place)
{
	RecentKey key;
	RecentPlace *r;

	if (strlen(country) >= sizeof(key.country) || strlen(lexical) >= sizeof(key.lexical))
	{
		PlaceInModel(c, country, lexical, place);
		return;
	}
	memset(&key, 0, sizeof(key));
	strcpy(key.country, country);
	strcpy(key.lexical, lexical);
	if (c->recent == NULL)
		c->recent = NewRecentPlaces(c->context);
	r = hash_search(c->recent, &key, HASH_FIND, NULL);
	if (r != NULL)
	{
		*place = r->place;
		return;
	}
	PlaceInModel(c, country, lexical, place);
	Remember(c, &key, place);
}
