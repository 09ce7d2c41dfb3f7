/*
 * model.c
 *		The routing configuration in each backend's memory: what the rules
 *		(routing.c) read.
 *
 * Routing a lead by SQL queries would cost several index scans and
 * executor start-ups per lead, many times the INSERT it rides on.  Instead,
 * each backend keeps a copy of what routing reads -- settings, brands, dealers
 * with their brands, products and stock, territories -- with a 3-d tree per
 * country and brand over the active dealers' positions on the unit sphere.
 * Postal codes are copied as leads look them up.
 *
 * The copy is never stale: every statement that changes one of those tables
 * gives aimroute.config_version a new, never reused number (a statement
 * trigger, schema/015_config_version.sql).  Routing reads that number
 * under the lead's own snapshot (once per snapshot: the rows of one COPY
 * share it) and rebuilds the copy when it differs, so a routing sees
 * exactly the configuration its snapshot sees: a change made earlier in the
 * same transaction, one rolled back, one committed by another session.
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

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/stratnum.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "storage/proc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/datum.h"
#include "utils/memutils.h"

#include "model.h"
#include "postal.h"
#include "postgis.h"
#include "routing.h"
#include "search_path.h"

#define EARTH_MEAN_RADIUS_M 6371008.7714 /* WGS84 mean radius */
#define MAX_PLACES			200000		 /* postal codes kept before starting over */
#define ARENA_BLOCK			(64 * 1024)	 /* see Keep */

PG_FUNCTION_INFO_V1(aimroute_routing_cache_info);

static Model *current = NULL;
static MemoryContext building = NULL; /* a build that failed half way, to free */
static MemoryContext scratch = NULL;  /* what a build needs only while it runs */

static Model *Build(Oid relid, int64 version);
static void LoadSettings(Model *c);
static void LoadBrands(Model *c);
static void LoadProducts(Model *c);
static void LoadDealers(Model *c);
static void LoadDealerLinks(Model *c);
static int CompareInts(const void *a, const void *b);
static void LoadTerritories(Model *c);
static void BuildGroups(Model *c);
static void BuildTrees(Model *c);
static void KdBuild(KdTree *t, int lo, int hi);
static inline bool TreeAccepts(Model *c, const CandidateFilter *f, int dealer);
static bool PassesRest(Model *c, const CandidateFilter *f, int dealer);
static void KdNearest(const KdTree *t, int lo, int hi, const double q[3], Model *c,
					  const CandidateFilter *f, int *best, double *best_d2);
static void KdRange(const KdTree *t, int lo, int hi, const double q[3], double r2, Model *c,
					const CandidateFilter *f, List **found);
static int Find(char **sorted, int n, const char *key);
static bool Contains(const int *sorted, int n, int value);
static int ReadQuery(const char *sql, bool read_only, long count);
static char *Text(HeapTuple row, TupleDesc desc, int col);
static void *Keep(Model *c, Size size);
static char *KeepText(Model *c, HeapTuple row, TupleDesc desc, int col);
static double ChordFor(double sphere_m);
static int CompareCandidates(const void *a, const void *b);
static HTAB *NewPlaceTable(MemoryContext context);
static void FindPostgisFunctions(Model *c);
static bool PointLatLon(Model *c, Datum point, double *lat, double *lon);
static bool CallNullable(FmgrInfo *fn, Datum arg, Datum *result);
static void FindPostalCodes(Model *c);

/*
 * ReadVersion reads aimroute.config_version under the active snapshot, the
 * one routing's queries use.  It reads the heap directly: this runs for
 * every lead, and a one-row scan costs less than executing a query.  The
 * number is not confidential, so no privilege is checked.
 */
static void
ReadVersion(Oid *relid, int64 *version)
{
	Oid namespace = get_namespace_oid("aimroute", false);
	Relation rel;
	TableScanDesc scan;
	HeapTuple tuple;
	int attnum;
	int rows = 0;

	*relid = get_relname_relid("config_version", namespace);
	if (!OidIsValid(*relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE), errmsg("aimroute.config_version does not exist"),
				 errhint("Reinstall the extension: the table is created by CREATE EXTENSION.")));
	rel = table_open(*relid, AccessShareLock);
	attnum = SPI_fnumber(RelationGetDescr(rel), "version");
	scan = table_beginscan(
		rel, ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot(), 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool isnull;
		Datum d = heap_getattr(tuple, attnum, RelationGetDescr(rel), &isnull);

		if (attnum > 0 && !isnull)
			*version = DatumGetInt64(d);
		rows++;
	}
	table_endscan(scan);
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
 * ModelCurrent returns the copy of the configuration the active
 * snapshot sees, rebuilding it when the configuration changed.
 */
Model *
ModelCurrent(void)
{
	Oid relid;
	int64 version = 0;
	TimestampTz started;
	Snapshot snapshot;
	int pinned;

	snapshot = RoutingSnapshot();
	if (current != NULL && SameAsChecked(snapshot))
		return current;
	checked.valid = false;
	ReadVersion(&relid, &version);
	if (current != NULL && current->version == version && current->version_relid == relid)
	{
		RememberChecked(snapshot);
		return current;
	}

	if (current != NULL)
	{
		MemoryContextDelete(current->context);
		current = NULL;
	}
	pinned = SpiConnectPinned();
	started = GetCurrentTimestamp();
	current = Build(relid, version);
	current->built_at = GetCurrentTimestamp();
	current->build_ms = (double) (current->built_at - started) / 1000.0;
	SpiFinishPinned(pinned);
	RememberChecked(snapshot);
	return current;
}

/*
 * aimroute_routing_cache_info is the SQL function
 * aimroute.routing_cache_info(): this session's copy of the configuration,
 * brought up to date first.
 */
Datum
aimroute_routing_cache_info(PG_FUNCTION_ARGS)
{
	TupleDesc desc;
	Datum values[8];
	bool nulls[8] = { false, false, false, false, false, false, false, false };
	Model *c;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "aimroute.routing_cache_info must return a composite type");
	desc = BlessTupleDesc(desc);
	c = ModelCurrent();
	values[0] = BoolGetDatum(true); /* enabled: always, since aimroute.routing_cache was retired */
	values[1] = Int64GetDatum(c->version);
	values[2] = TimestampTzGetDatum(c->built_at);
	values[3] = Float8GetDatum(c->build_ms);
	values[4] = Int32GetDatum(c->ndealers);
	values[5] = Int32GetDatum(c->nterritories);
	values[6] = Int64GetDatum(hash_get_num_entries(c->places));
	values[7] = Int64GetDatum(MemoryContextMemAllocated(c->context, true));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/*
 * Build reads the configuration into a new memory context.  An error half
 * way leaves no copy; the next routing frees what was built and tries again.
 */
static Model *
Build(Oid relid, int64 version)
{
	MemoryContext context;
	MemoryContext old;
	Model *c;

	if (building != NULL)
		MemoryContextDelete(building);
	context = AllocSetContextCreate(TopMemoryContext, "aimroute model", ALLOCSET_DEFAULT_SIZES);
	building = context;
	scratch = AllocSetContextCreate(context, "aimroute model build", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(context);

	c = palloc0(sizeof(Model));
	c->context = context;
	c->version_relid = relid;
	c->version = version;

	FindPostgisFunctions(c);
	LoadSettings(c);
	LoadBrands(c);
	LoadProducts(c);
	LoadDealers(c);
	LoadDealerLinks(c);
	LoadTerritories(c);
	BuildGroups(c);
	BuildTrees(c);
	FindPostalCodes(c);

	c->places = NewPlaceTable(context);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(scratch);
	scratch = NULL;
	building = NULL;
	return c;
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
 * FindPostalCodes finds aimroute.postal_codes, its primary key and the
 * columns LookUpPlace reads.
 */
static void
FindPostalCodes(Model *c)
{
	static const char *const columns[4] = { "place_name", "state_code", "county", "centroid" };
	Relation rel;

	c->postal_relid = get_relname_relid("postal_codes", get_namespace_oid("aimroute", false));
	if (!OidIsValid(c->postal_relid))
		elog(ERROR, "aimroute.postal_codes does not exist");
	rel = table_open(c->postal_relid, AccessShareLock);
	c->postal_index = RelationGetPrimaryKeyIndex(rel);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(c->postal_index))
		elog(ERROR, "aimroute.postal_codes has no primary key");
	for (int i = 0; i < 4; i++)
	{
		c->postal_att[i] = get_attnum(c->postal_relid, columns[i]);
		if (c->postal_att[i] == InvalidAttrNumber)
			elog(ERROR, "aimroute.postal_codes has no column \"%s\"", columns[i]);
	}
}

/*
 * ReadQuery runs a read-only query for Build.  SPI leaves its own memory
 * context current after each call; the copy is built in the caller's.
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
 * Keep allocates size bytes that live as long as the copy.  The copy's many
 * small pieces -- dealer numbers, locations, per-dealer lists -- are carved
 * out of large blocks one after the other, without a chunk header each.
 */
static void *
Keep(Model *c, Size size)
{
	void *p;

	size = MAXALIGN(Max(size, 1));
	if (size > c->arena_left)
	{
		Size block = Max(size, ARENA_BLOCK);

		c->arena = MemoryContextAlloc(c->context, block);
		c->arena_left = block;
	}
	p = c->arena;
	c->arena += size;
	c->arena_left -= size;
	return p;
}

/*
 * KeepText returns a text column as a C string kept with the copy, or NULL.
 */
static char *
KeepText(Model *c, HeapTuple row, TupleDesc desc, int col)
{
	bool isnull;
	Datum d = SPI_getbinval(row, desc, col, &isnull);
	text *t;
	int len;
	char *s;

	if (isnull)
		return NULL;
	t = DatumGetTextPP(d);
	len = VARSIZE_ANY_EXHDR(t);
	s = Keep(c, len + 1);
	memcpy(s, VARDATA_ANY(t), len);
	s[len] = '\0';
	if ((Pointer) t != DatumGetPointer(d))
		pfree(t);
	return s;
}

/*
 * LoadSettings copies what routing needs of aimroute.settings.
 */
static void
LoadSettings(Model *c)
{
	RoutingSettings *s = &c->settings;
	HeapTuple row;
	TupleDesc desc;
	bool isnull;
	Datum d;

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
	s->radius_enabled = DatumGetBool(SPI_getbinval(row, desc, 1, &isnull));
	s->radius_m = DatumGetFloat8(SPI_getbinval(row, desc, 2, &isnull)) * METERS_PER_MILE;
	d = SPI_getbinval(row, desc, 3, &isnull);
	if (!isnull)
	{
		Datum *elems;
		bool *nulls;
		int n;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls,
						  &n);
		s->radius_countries = palloc(sizeof(char *) * Max(n, 1));
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				s->radius_countries[s->nradius_countries++] = TextDatumGetCString(elems[i]);
	}
	s->default_dealer = Text(row, desc, 4);
	s->product_routing = DatumGetBool(SPI_getbinval(row, desc, 5, &isnull));
	s->inventory_routing = DatumGetBool(SPI_getbinval(row, desc, 6, &isnull));
	ReadRerouteSettings(row, desc, 7, &s->reroute);
}

/*
 * LoadBrands copies aimroute.brands, sorted by code in byte order.
 */
static void
LoadBrands(Model *c)
{
	if (ReadQuery("SELECT brand_code, name FROM aimroute.brands ORDER BY brand_code COLLATE \"C\"",
				  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read aimroute.brands");
	c->nbrands = SPI_processed;
	c->brand_codes = palloc(sizeof(char *) * Max(c->nbrands, 1));
	c->brand_names = palloc(sizeof(char *) * Max(c->nbrands, 1));
	for (int i = 0; i < c->nbrands; i++)
	{
		c->brand_codes[i] = Text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		c->brand_names[i] = Text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
}

/*
 * LoadProducts lists every product code of assignments and stock, sorted.
 */
static void
LoadProducts(Model *c)
{
	if (ReadQuery("SELECT code FROM (SELECT product_code FROM aimroute.product_assignments"
				  " UNION SELECT product_code FROM aimroute.inventory WHERE quantity > 0) p(code)"
				  " ORDER BY code COLLATE \"C\"",
				  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the product codes");
	c->nproducts = SPI_processed;
	c->product_codes = palloc(sizeof(char *) * Max(c->nproducts, 1));
	c->assigned = palloc0(sizeof(int *) * Max(c->nproducts, 1));
	c->nassigned = palloc0(sizeof(int) * Max(c->nproducts, 1));
	c->stocked = palloc0(sizeof(int *) * Max(c->nproducts, 1));
	c->nstocked = palloc0(sizeof(int) * Max(c->nproducts, 1));
	for (int i = 0; i < c->nproducts; i++)
		c->product_codes[i] = Text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
}

/*
 * LoadDealers copies aimroute.dealers, sorted by number in byte order (the
 * tie-break order of routing), with each location as a unit vector.
 */
static void
LoadDealers(Model *c)
{
	const char *sql = "SELECT dealer_number, country, dealer_group, active_for_sales, location"
					  " FROM aimroute.dealers ORDER BY dealer_number COLLATE \"C\"";

	if (ReadQuery(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read aimroute.dealers");
	c->ndealers = SPI_processed;
	c->dealers = palloc0(sizeof(ModelDealer) * Max(c->ndealers, 1));
	for (int i = 0; i < c->ndealers; i++)
	{
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		ModelDealer *d = &c->dealers[i];
		bool null_location;
		Datum location = SPI_getbinval(row, desc, 5, &null_location);
		double lat;
		double lon;
		bool isnull;

		d->number = KeepText(c, row, desc, 1);
		d->country = KeepText(c, row, desc, 2);
		d->group = KeepText(c, row, desc, 3);
		d->active = DatumGetBool(SPI_getbinval(row, desc, 4, &isnull)) && !isnull;
		if (!null_location)
			location = PointerGetDatum(PG_DETOAST_DATUM(location));
		if (!null_location && PointLatLon(c, location, &lat, &lon))
		{
			Size size = VARSIZE_ANY(DatumGetPointer(location));

			d->has_location = true;
			d->location = PointerGetDatum(memcpy(Keep(c, size), DatumGetPointer(location), size));
			UnitVector(lat, lon, d->xyz);
		}
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
static int **
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
LoadLinks(Model *c, LinkKind kind, const char *sql)
{
	MemoryContext old = MemoryContextSwitchTo(scratch);
	int *count;
	int *target;

	if (ReadQuery(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read \"%s\"", sql);
	count = palloc0(sizeof(int) * Max(c->ndealers, 1));
	target = palloc(sizeof(int) * 2 * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char *dealer = Text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char *code = Text(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		int di = ModelFindDealer(c, dealer);
		int ci = kind == LINK_BRANDS ? ModelFindBrand(c, code) : ModelFindProduct(c, code);

		target[2 * i] = di;
		target[2 * i + 1] = ci;
		if (di >= 0 && ci >= 0)
			count[di]++;
	}
	for (int d = 0; d < c->ndealers; d++)
	{
		int *n;

		*LinkList(&c->dealers[d], kind, &n) = Keep(c, sizeof(int) * count[d]);
	}
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		int *n;
		int **list;

		if (target[2 * i] < 0 || target[2 * i + 1] < 0)
			continue;
		list = LinkList(&c->dealers[target[2 * i]], kind, &n);
		(*list)[(*n)++] = target[2 * i + 1];
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
LoadDealerLinks(Model *c)
{
	LoadLinks(c, LINK_BRANDS, "SELECT dealer_number, brand_code FROM aimroute.dealer_brands");
	LoadLinks(c, LINK_PRODUCTS,
			  "SELECT dealer_number, product_code FROM aimroute.product_assignments");
	LoadLinks(c, LINK_STOCK,
			  "SELECT dealer_number, product_code FROM aimroute.inventory WHERE quantity > 0");
	for (int di = 0; di < c->ndealers; di++)
	{
		ModelDealer *d = &c->dealers[di];

		qsort(d->brands, d->nbrands, sizeof(int), CompareInts);
		qsort(d->products, d->nproducts, sizeof(int), CompareInts);
		qsort(d->stock, d->nstock, sizeof(int), CompareInts);
		for (int i = 0; i < d->nproducts; i++)
			c->nassigned[d->products[i]]++;
		for (int i = 0; i < d->nstock; i++)
			c->nstocked[d->stock[i]]++;
	}
	for (int p = 0; p < c->nproducts; p++)
	{
		c->assigned[p] = Keep(c, sizeof(int) * c->nassigned[p]);
		c->stocked[p] = Keep(c, sizeof(int) * c->nstocked[p]);
		c->nassigned[p] = 0;
		c->nstocked[p] = 0;
	}
	for (int di = 0; di < c->ndealers; di++)
	{
		ModelDealer *d = &c->dealers[di];

		for (int i = 0; i < d->nproducts; i++)
			c->assigned[d->products[i]][c->nassigned[d->products[i]]++] = di;
		for (int i = 0; i < d->nstock; i++)
			c->stocked[d->stock[i]][c->nstocked[d->stock[i]]++] = di;
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
 * CompareTerritories orders territories by country, kind and code.
 */
static int
CompareTerritories(const void *a, const void *b)
{
	const ModelTerritory *x = a;
	const ModelTerritory *y = b;
	int cmp = strcmp(x->country, y->country);

	if (cmp == 0)
		cmp = (int) x->kind - (int) y->kind;
	if (cmp == 0)
		cmp = strcmp(x->code, y->code);
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
LoadTerritories(Model *c)
{
	int n = 0;

	if (ReadQuery("SELECT country, kind, code, brand_code, dealer_number FROM aimroute.territories",
				  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read aimroute.territories");
	c->territories = palloc(sizeof(ModelTerritory) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		ModelTerritory *t = &c->territories[n];
		MemoryContext old = MemoryContextSwitchTo(scratch);
		char *brand = Text(row, desc, 4);
		bool branded = brand != NULL;

		t->kind = KindOrder(Text(row, desc, 2));
		t->dealer = ModelFindDealer(c, Text(row, desc, 5));
		t->brand = branded ? ModelFindBrand(c, brand) : -1;
		MemoryContextSwitchTo(old);
		MemoryContextReset(scratch);
		/* A brand no longer in aimroute.brands can match no lead. */
		if (t->dealer < 0 || (branded && t->brand < 0))
			continue;
		t->country = KeepText(c, row, desc, 1);
		t->code = t->kind == 4 ? "" : KeepText(c, row, desc, 3);
		n++;
	}
	SPI_freetuptable(SPI_tuptable);
	c->nterritories = n;
	qsort(c->territories, n, sizeof(ModelTerritory), CompareTerritories);
}

/*
 * CompareGroupMembers orders group members by country, group and dealer.
 */
static int
CompareGroupMembers(const void *a, const void *b)
{
	const GroupMember *x = a;
	const GroupMember *y = b;
	int cmp = strcmp(x->country, y->country);

	if (cmp == 0)
		cmp = strcmp(x->group, y->group);
	if (cmp == 0)
		cmp = x->dealer - y->dealer;
	return cmp;
}

/*
 * BuildGroups lists the members of each dealer group per country.
 */
static void
BuildGroups(Model *c)
{
	c->groups = palloc(sizeof(GroupMember) * Max(c->ndealers, 1));
	for (int i = 0; i < c->ndealers; i++)
		if (c->dealers[i].group != NULL)
			c->groups[c->ngroups++] =
				(GroupMember){ c->dealers[i].country, c->dealers[i].group, i };
	qsort(c->groups, c->ngroups, sizeof(GroupMember), CompareGroupMembers);
}

/*
 * CompareTreeEntries orders (country, brand, dealer) triples.
 */
typedef struct TreeEntry
{
	const char *country;
	int brand;
	int dealer;
} TreeEntry;

static int
CompareTreeEntries(const void *a, const void *b)
{
	const TreeEntry *x = a;
	const TreeEntry *y = b;
	int cmp = strcmp(x->country, y->country);

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
BuildTrees(Model *c)
{
	int n = 0;
	TreeEntry *entries;
	int start;

	for (int i = 0; i < c->ndealers; i++)
		if (c->dealers[i].active && c->dealers[i].has_location)
			n += c->dealers[i].nbrands;
	entries = MemoryContextAlloc(scratch, sizeof(TreeEntry) * Max(n, 1));
	n = 0;
	for (int i = 0; i < c->ndealers; i++)
	{
		ModelDealer *d = &c->dealers[i];

		if (!d->active || !d->has_location)
			continue;
		for (int b = 0; b < d->nbrands; b++)
			entries[n++] = (TreeEntry){ d->country, d->brands[b], i };
	}
	qsort(entries, n, sizeof(TreeEntry), CompareTreeEntries);

	c->trees = palloc(sizeof(BrandTree) * Max(n, 1));
	for (start = 0; start < n;)
	{
		int end = start;
		BrandTree *bt = &c->trees[c->ntrees++];

		while (end < n && entries[end].brand == entries[start].brand &&
			   strcmp(entries[end].country, entries[start].country) == 0)
			end++;
		bt->country = entries[start].country;
		bt->brand = entries[start].brand;
		bt->tree.n = end - start;
		bt->tree.dealer = palloc(sizeof(int) * bt->tree.n);
		bt->tree.pt = palloc(sizeof(double[3]) * bt->tree.n);
		bt->tree.dim = palloc(bt->tree.n);
		for (int i = 0; i < bt->tree.n; i++)
		{
			bt->tree.dealer[i] = entries[start + i].dealer;
			memcpy(bt->tree.pt[i], c->dealers[entries[start + i].dealer].xyz, sizeof(double[3]));
		}
		KdBuild(&bt->tree, 0, bt->tree.n);
		start = end;
	}
	pfree(entries);
}

/*
 * KdSwap exchanges two nodes of a tree under construction.
 */
static void
KdSwap(KdTree *t, int i, int j)
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
KdBuild(KdTree *t, int lo, int hi)
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
KdNearest(const KdTree *t, int lo, int hi, const double q[3], Model *c, const CandidateFilter *f,
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
KdRange(const KdTree *t, int lo, int hi, const double q[3], double r2, Model *c,
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
 * before key by cmp(element, key); n when every element does.
 */
static inline int
LowerBound(const void *base, int n, Size size, const void *key,
		   int (*cmp)(const void *element, const void *key))
{
	int lo = 0;
	int hi = n;

	while (lo < hi)
	{
		int mid = lo + (hi - lo) / 2;

		if (cmp((const char *) base + (Size) mid * size, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * CompareStringKey orders an element of a sorted string array against a key.
 */
static int
CompareStringKey(const void *element, const void *key)
{
	return strcmp(*(char *const *) element, (const char *) key);
}

/*
 * Find looks a string up in a sorted array; -1 when absent.
 */
static int
Find(char **sorted, int n, const char *key)
{
	int i = LowerBound(sorted, n, sizeof(char *), key, CompareStringKey);

	return i < n && strcmp(sorted[i], key) == 0 ? i : -1;
}

/*
 * Contains tells whether a sorted int array holds value.
 */
static bool
Contains(const int *sorted, int n, int value)
{
	int i = LowerBound(sorted, n, sizeof(int), &value, CompareInts);

	return i < n && sorted[i] == value;
}

/*
 * CompareDealerKey orders a dealer against a dealer number.
 */
static int
CompareDealerKey(const void *element, const void *key)
{
	return strcmp(((const ModelDealer *) element)->number, (const char *) key);
}

/*
 * ModelFindDealer returns a dealer's index, -1 when there is none.
 */
int
ModelFindDealer(Model *c, const char *number)
{
	int i = LowerBound(c->dealers, c->ndealers, sizeof(ModelDealer), number, CompareDealerKey);

	return i < c->ndealers && strcmp(c->dealers[i].number, number) == 0 ? i : -1;
}

/*
 * ModelFindBrand returns a brand's index, -1 when there is none.
 */
int
ModelFindBrand(Model *c, const char *code)
{
	return code ? Find(c->brand_codes, c->nbrands, code) : -1;
}

/*
 * ModelFindProduct returns a product's index, -1 when no dealer is
 * assigned it or has it in stock.
 */
int
ModelFindProduct(Model *c, const char *code)
{
	return code ? Find(c->product_codes, c->nproducts, code) : -1;
}

/*
 * ModelSells tells whether a dealer sells a brand.
 */
bool
ModelSells(const ModelDealer *d, int brand)
{
	return brand >= 0 && Contains(d->brands, d->nbrands, brand);
}

/*
 * ModelAccepts tells whether a dealer passes a filter: the candidate
 * condition of a rule.
 */
bool
ModelAccepts(Model *c, const CandidateFilter *f, int dealer)
{
	const ModelDealer *d = &c->dealers[dealer];

	if (!d->active || !ModelSells(d, f->brand))
		return false;
	if (f->country && strcmp(d->country, f->country) != 0)
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
	const ModelDealer *d = &c->dealers[dealer];

	for (int i = 0; i < f->nexcluded; i++)
		if (f->excluded[i] == dealer)
			return false;
	if (f->product != FILTER_ANY &&
		(f->product < 0 || !Contains(d->products, d->nproducts, f->product)))
		return false;
	if (f->stock != FILTER_ANY && (f->stock < 0 || !Contains(d->stock, d->nstock, f->stock)))
		return false;
	if (f->group && (d->group == NULL || strcmp(d->group, f->group) != 0))
		return false;
	return true;
}

/*
 * ModelDistance measures a dealer's distance to a centre point with
 * PostGIS; NaN when either has no position.
 */
double
ModelDistance(Model *c, int dealer, Datum centroid)
{
	const ModelDealer *d = &c->dealers[dealer];
	LOCAL_FCINFO(fcinfo, 3);
	Datum result;

	if (!d->has_location || centroid == (Datum) 0)
		return NAN;
	InitFunctionCallInfoData(*fcinfo, &c->distance, 3, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = d->location;
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

/*
 * CompareTreeKey orders a tree by country and brand against a key tree.
 */
static int
CompareTreeKey(const void *element, const void *key)
{
	const BrandTree *x = element;
	const BrandTree *y = key;
	int cmp = strcmp(x->country, y->country);

	return cmp != 0 ? cmp : x->brand - y->brand;
}

/*
 * FindTree returns the tree of the filter's country and brand, NULL when
 * no active dealer with a location there sells the brand.
 */
static const KdTree *
FindTree(Model *c, const CandidateFilter *f)
{
	BrandTree key = { f->country, f->brand };
	int i = LowerBound(c->trees, c->ntrees, sizeof(BrandTree), &key, CompareTreeKey);

	return i < c->ntrees && CompareTreeKey(&c->trees[i], &key) == 0 ? &c->trees[i].tree : NULL;
}

/*
 * GroupRange finds the members of one group in one country.
 */
static void
GroupRange(Model *c, const char *country, const char *group, int *first, int *last)
{
	GroupMember key = { country, group, -1 };
	int i = LowerBound(c->groups, c->ngroups, sizeof(GroupMember), &key, CompareGroupMembers);

	*first = i;
	while (i < c->ngroups && strcmp(c->groups[i].country, country) == 0 &&
		   strcmp(c->groups[i].group, group) == 0)
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

	if (f->group != NULL)
	{
		int first;
		int last;

		GroupRange(c, f->country, f->group, &first, &last);
		for (int i = first; i < last; i++)
			if (c->dealers[c->groups[i].dealer].has_location &&
				ModelAccepts(c, f, c->groups[i].dealer))
				*found = lappend_int(*found, c->groups[i].dealer);
		return true;
	}
	if (f->stock >= 0 && c->nstocked[f->stock] < tree->n / 4)
	{
		list = c->stocked[f->stock];
		n = c->nstocked[f->stock];
	}
	else if (f->product >= 0 && c->nassigned[f->product] < tree->n / 4)
	{
		list = c->assigned[f->product];
		n = c->nassigned[f->product];
	}
	else
		return false;
	for (int i = 0; i < n; i++)
		if (c->dealers[list[i]].has_location && ModelAccepts(c, f, list[i]))
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
		double s = SphereMeters(q, c->dealers[lfirst_int(lc)].xyz);

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
	const KdTree *tree = FindTree(c, f);
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
	listed = GatherListed(c, f, tree, &found);
	if (listed)
		nearest = NearestOf(c, found, xyz);
	else
	{
		double best_d2 = INFINITY;

		KdNearest(tree, 0, tree->n, xyz, c, f, &nearest, &best_d2);
	}
	if (nearest < 0 || SphereMeters(xyz, c->dealers[nearest].xyz) * (1.0 - SPHERE_MARGIN) > limit_m)
		return 0;

	nearest_m = ModelDistance(c, nearest, centroid);
	bound = (!isnan(nearest_m) && nearest_m <= limit_m) ? nearest_m : limit_m;
	if (!listed)
	{
		double chord = ChordFor(bound / (1.0 - SPHERE_MARGIN));

		KdRange(tree, 0, tree->n, xyz, chord * chord, c, f, &found);
	}
	*out = palloc(sizeof(Candidate) * Max(list_length(found), 1));
	foreach (lc, found)
	{
		double s = SphereMeters(xyz, c->dealers[lfirst_int(lc)].xyz);

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
	int first;
	int last;

	GroupRange(c, f->country, f->group, &first, &last);
	for (int i = first; i < last; i++)
		if (ModelAccepts(c, f, c->groups[i].dealer))
			return c->groups[i].dealer;
	return -1;
}

/*
 * TerritoryRange finds the territories of one country, kind and code.
 */
static void
TerritoryRange(Model *c, const char *country, char kind, const char *code, int *first, int *last)
{
	ModelTerritory key = { country, code, kind, 0, -1 };
	int i = LowerBound(c->territories, c->nterritories, sizeof(ModelTerritory), &key,
					   CompareTerritories);

	*first = i;
	while (i < c->nterritories && strcmp(c->territories[i].country, country) == 0 &&
		   c->territories[i].kind == kind && strcmp(c->territories[i].code, code) == 0)
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
				 const char *state, int brand, ModelTerritory ***out)
{
	const char *codes[4] = { postal, county, state, "" };
	int n = 0;
	int cap = 16;
	ModelTerritory **found = palloc(sizeof(ModelTerritory *) * cap);

	for (int k = 0; k < 4; k++)
	{
		int first;
		int last;

		if (codes[k] == NULL)
			continue;
		TerritoryRange(c, country, (char) (k + 1), codes[k], &first, &last);
		for (int i = first; i < last; i++)
		{
			ModelTerritory *t = &c->territories[i];

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
 * NewPlaceTable starts an empty table of looked-up postal codes.
 */
static HTAB *
NewPlaceTable(MemoryContext context)
{
	HASHCTL ctl;

	ctl.keysize = sizeof(((Place *) NULL)->key);
	ctl.entrysize = sizeof(Place);
	ctl.hcxt = context;
	return hash_create("aimroute postal codes", 1024, &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
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
 * LookUpPlace reads one postal code of aimroute.postal_codes into place,
 * allocating in the current memory context; false when it is not there.
 * It probes the primary key directly under the active snapshot: a postal
 * code not seen before is routine on the INSERT path, and an index probe
 * costs a fraction of executing a query.
 */
static bool
LookUpPlace(Model *c, const char *country, const char *code, Place *place)
{
	Relation heap = table_open(c->postal_relid, AccessShareLock);
	Relation index = index_open(c->postal_index, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	IndexScanDesc scan;
	ScanKeyData keys[2];
	bool found;

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(country));
	keys[0].sk_collation = index->rd_indcollation[0];
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(code));
	keys[1].sk_collation = index->rd_indcollation[1];
	scan = index_beginscan(
		heap, index, ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (found)
	{
		bool isnull;
		Datum d;
		double lat;
		double lon;

		place->known = true;
		d = slot_getattr(slot, c->postal_att[0], &isnull);
		place->place_name = isnull ? NULL : TextDatumGetCString(d);
		d = slot_getattr(slot, c->postal_att[1], &isnull);
		place->state_code = isnull ? NULL : TextDatumGetCString(d);
		d = slot_getattr(slot, c->postal_att[2], &isnull);
		place->county = isnull ? NULL : TextDatumGetCString(d);
		d = slot_getattr(slot, c->postal_att[3], &isnull);
		if (!isnull && PointLatLon(c, d, &lat, &lon))
		{
			place->has_centroid = true;
			place->centroid = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
			UnitVector(lat, lon, place->xyz);
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	return found;
}

/*
 * ModelPlace finds a postal code (normalized lexically) of a country,
 * with the fallback of PostalResolve (a Canadian code's FSA) when the code
 * is not known.  The answer is kept for the next lead; a
 * code too long for the table's key is looked up every time, in the
 * caller's memory context.
 */
Place *
ModelPlace(Model *c, const char *country, const char *lexical)
{
	char key[sizeof(((Place *) NULL)->key)];
	Place *place;
	bool keep = strlen(country) + 1 + strlen(lexical) < sizeof(key);
	MemoryContext old = CurrentMemoryContext;
	bool found;

	if (keep)
	{
		snprintf(key, sizeof(key), "%s:%s", country, lexical);
		place = hash_search(c->places, key, HASH_FIND, NULL);
		if (place != NULL)
			return place;
		if (hash_get_num_entries(c->places) >= MAX_PLACES)
		{
			hash_destroy(c->places);
			c->places = NewPlaceTable(c->context);
		}
		place = hash_search(c->places, key, HASH_ENTER, &found);
		memset((char *) place + sizeof(key), 0, sizeof(Place) - sizeof(key));
	}
	else
		place = palloc0(sizeof(Place));

	PG_TRY();
	{
		char *fallback;

		/* What the place holds lives as long as the place. */
		MemoryContextSwitchTo(keep ? c->context : old);
		place->code = pstrdup(lexical);
		if (!LookUpPlace(c, country, lexical, place) &&
			(fallback = PostalFallback(country, lexical)) != NULL)
		{
			place->code = fallback;
			LookUpPlace(c, country, place->code, place);
		}
	}
	PG_CATCH();
	{
		/* Leave no half-filled entry behind. */
		MemoryContextSwitchTo(old);
		if (keep)
			hash_search(c->places, key, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return place;
}
