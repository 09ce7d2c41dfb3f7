/*
 * model.h
 *		The routing configuration as routing reads it: dealers, brands,
 *		territories, products, stock and settings, with a spatial index per
 *		country and brand; one copy per configuration version, in shared
 *		memory when the library is preloaded, else in the backend's.
 */
#ifndef AIMROUTE_MODEL_H
#define AIMROUTE_MODEL_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/hsearch.h"

#include "reroute.h"

/* Bound on |spheroid / sphere - 1| for WGS84 against the mean sphere, with room. */
#define SPHERE_MARGIN 0.01

/* What routing needs of aimroute.settings. */
typedef struct RoutingSettings
{
	bool radius_enabled;
	double radius_m;
	const char **radius_countries;
	int nradius_countries;
	const char *default_dealer;
	bool product_routing;
	bool inventory_routing;
	bool round_robin;		   /* settings.tie_break = 'round_robin' */
	bool drive_enabled;		   /* settings.drive_distance_enabled */
	const char *drive_network; /* settings.drive_network; NULL: none */
	RerouteSettings reroute;
} RoutingSettings;

/*
 * A piece of the model: its offset from the start of the model's bytes; 0
 * is none (the header is at offset 0).  The model holds no pointer, so that
 * its bytes mean the same wherever they are mapped: in one backend's
 * memory, or in a shared memory segment every backend of the database maps
 * at an address of its own (model_share.c).
 */
typedef uint32 ModelRef;

typedef struct ModelDealer
{
	ModelRef number;
	ModelRef country;
	ModelRef group; /* 0: none */
	bool active;
	int daily_lead_cap; /* 0: none */
	bool has_location;
	double xyz[3];	   /* unit vector */
	ModelRef location; /* geography */
	ModelRef brands;   /* sorted brand indexes (int) */
	int nbrands;
	ModelRef products; /* sorted product indexes of its assignments */
	int nproducts;
	ModelRef stock; /* sorted product indexes with quantity > 0 */
	int nstock;
} ModelDealer;

/* A 3-d tree over unit vectors, stored as an implicit balanced tree. */
typedef struct KdTree
{
	int n;
	ModelRef dealer; /* int: dealer index of each node */
	ModelRef pt;	 /* double[3]: its point */
	ModelRef dim;	 /* unsigned char: its split axis */
} KdTree;

/* The active dealers of one country that sell one brand. */
typedef struct BrandTree
{
	ModelRef country;
	int brand;
	KdTree tree;
} BrandTree;

typedef struct ModelTerritory
{
	ModelRef country;
	ModelRef code; /* "" for kind country: any code of the country */
	char kind;	   /* 'p'ostal, 'c'ounty, 's'tate, 'n'ation */
	int brand;	   /* -1: every brand the dealer sells */
	int dealer;
	TimestampTz valid_from; /* DT_NOBEGIN: always */
	TimestampTz valid_to;	/* exclusive; DT_NOEND: never ends */
} ModelTerritory;

/*
 * A period of a dealer's product assignment, for the dealers and products
 * with at least one period that is not open: the others apply always.
 */
typedef struct ModelDatedProduct
{
	int dealer;
	int product;
	TimestampTz valid_from;
	TimestampTz valid_to;
} ModelDatedProduct;

/* Whether a territory applies at an instant (an open end holds infinity too). */
static inline bool
ModelTerritoryValidAt(const ModelTerritory *t, TimestampTz at)
{
	return t->valid_from <= at && (at < t->valid_to || TIMESTAMP_IS_NOEND(t->valid_to));
}

/* Whether a territory has a period that is not open. */
static inline bool
ModelTerritoryDated(const ModelTerritory *t)
{
	return !TIMESTAMP_IS_NOBEGIN(t->valid_from) || !TIMESTAMP_IS_NOEND(t->valid_to);
}

/* A postal code of aimroute.postal_codes: where it is. */
typedef struct PostalRow
{
	ModelRef country;
	ModelRef code;
	ModelRef place_name; /* 0: none */
	ModelRef state_code;
	ModelRef county;
	ModelRef centroid; /* geography; 0: none, or PostGIS gives it no latitude */
	double xyz[3];	   /* the centre point on the unit sphere */
} PostalRow;

/* A slot of the postal codes' hash table: the code's hash and its row (0: empty). */
typedef struct PostalSlot
{
	uint32 hash;
	ModelRef row; /* PostalRow, followed by its strings and centre point */
} PostalSlot;

/* A dealer group's member in a country. */
typedef struct GroupMember
{
	ModelRef country;
	ModelRef group;
	int dealer;
} GroupMember;

/* What identifies one state of the configuration: its version row. */
typedef struct ModelKey
{
	Oid database;
	Oid relid;			/* aimroute.config_version */
	int64 version;		/* its number */
	TransactionId xmin; /* the transaction that wrote it (raw, never frozen) */
} ModelKey;

/*
 * The model's bytes, header first: everything the routing search reads.
 * Arrays and strings are pieces addressed by ModelRef.
 */
typedef struct ModelData
{
	Size size; /* of the whole model, header included */
	ModelKey key;
	TimestampTz built_at;
	double build_ms;
	/* aimroute.settings (reroute.tz is NULL here: each backend looks it up) */
	bool radius_enabled;
	double radius_m;
	ModelRef radius_countries; /* ModelRef of each */
	int nradius_countries;
	ModelRef default_dealer;
	bool product_routing;
	bool inventory_routing;
	bool round_robin;
	bool drive_enabled;
	ModelRef drive_network; /* 0: none */
	RerouteSettings reroute;
	ModelRef dealers; /* ModelDealer, sorted by number: a lower index is a lower number */
	int ndealers;
	ModelRef brand_codes; /* ModelRef of each, sorted */
	ModelRef brand_names;
	int nbrands;
	ModelRef product_codes; /* ModelRef of each, sorted */
	ModelRef assigned;		/* ModelRef per product: int dealers assigned it */
	ModelRef nassigned;		/* int per product */
	ModelRef stocked;		/* ModelRef per product: int dealers with it in stock */
	ModelRef nstocked;
	int nproducts;
	ModelRef trees; /* BrandTree, sorted by country, brand */
	int ntrees;
	ModelRef territories; /* ModelTerritory, sorted by country, kind, code */
	int nterritories;
	bool dated_territories;	 /* some territory has a period that is not open */
	ModelRef dated_products; /* ModelDatedProduct, sorted by dealer, product */
	int ndated_products;
	ModelRef groups; /* GroupMember, sorted by country, group, dealer */
	int ngroups;
	int npostal;
	ModelRef postal_slots; /* PostalSlot: a hash table of the postal codes */
	uint32 npostal_slots;  /* a power of two, at least twice npostal */
} ModelData;

/*
 * One backend's handle on a model: where its bytes are, and what stays
 * with the backend -- settings with pointers, the PostGIS functions' call
 * info.
 */
typedef struct Model
{
	const char *base; /* the model's bytes */
	const ModelData *data;
	MemoryContext context;		 /* this backend's part */
	struct dsm_segment *segment; /* the bytes are in this shared segment, or */
	MemoryContext bytes_context; /* in this child of context */
	RoutingSettings settings;
	HTAB *recent;		  /* postal codes looked up lately (RecentPlace): NULL until the first */
	FmgrInfo distance;	  /* PostGIS st_distance(geography, geography, boolean) */
	FmgrInfo to_geometry; /* PostGIS geometry(geography) */
	FmgrInfo st_x;		  /* PostGIS st_x(geometry) */
	FmgrInfo st_y;		  /* PostGIS st_y(geometry) */
} Model;

/* A piece of a model's bytes. */
static inline const void *
ModelAt(const Model *m, ModelRef ref)
{
	return m->base + ref;
}

/* A string of a model's bytes; NULL for none. */
static inline const char *
ModelText(const Model *m, ModelRef ref)
{
	return ref == 0 ? NULL : m->base + ref;
}

/* The dealer at an index. */
static inline const ModelDealer *
ModelDealerAt(const Model *m, int dealer)
{
	return (const ModelDealer *) (m->base + m->data->dealers) + dealer;
}

/* A dealer's number. */
static inline const char *
ModelDealerNumber(const Model *m, int dealer)
{
	return m->base + ModelDealerAt(m, dealer)->number;
}

/* A brand's code or name. */
static inline const char *
ModelBrandCode(const Model *m, int brand)
{
	return m->base + ((const ModelRef *) (m->base + m->data->brand_codes))[brand];
}

static inline const char *
ModelBrandName(const Model *m, int brand)
{
	return ModelText(m, ((const ModelRef *) (m->base + m->data->brand_names))[brand]);
}

/*
 * Where a lead's postal code is, as aimroute.postal_codes says: strings
 * and the centre point in the model's bytes, valid while the model is.
 */
typedef struct Place
{
	const char *code; /* the stored code (a Canadian code may fall back to its FSA) */
	bool known;		  /* found in aimroute.postal_codes */
	const char *place_name;
	const char *state_code;
	const char *county;
	bool has_centroid;
	Datum centroid;
	double xyz[3];
} Place;

/* Product and stock filters: a product index, or one of these. */
#define FILTER_ANY	   (-1) /* no filter */
#define FILTER_NOTHING (-2) /* a product no dealer has: nobody passes */

/* Which dealers a nearest-dealer search may return. */
typedef struct CandidateFilter
{
	const char *country;
	int brand;
	const int *excluded; /* dealer indexes */
	int nexcluded;
	int product;	   /* the dealer must be assigned it */
	int stock;		   /* the dealer must have it in stock */
	const char *group; /* NULL: any */
	TimestampTz at;	   /* the instant whose product assignments apply */
} CandidateFilter;

typedef struct Candidate
{
	int dealer;
	double sphere_m; /* NaN without a location */
} Candidate;

extern Model *ModelCurrent(void);
extern int ModelFindDealer(Model *c, const char *number);
extern int ModelFindBrand(Model *c, const char *code);
extern int ModelFindProduct(Model *c, const char *code);
extern bool ModelSells(const Model *c, const ModelDealer *d, int brand);
extern bool ModelAccepts(Model *c, const CandidateFilter *f, int dealer);
extern void ModelPlace(Model *c, const char *country, const char *lexical, Place *place);
extern double ModelDistance(Model *c, int dealer, Datum centroid);
extern int ModelNearest(Model *c, const CandidateFilter *f, const double xyz[3], Datum centroid,
						double limit_m, Candidate **out);
extern int ModelWithin(Model *c, const CandidateFilter *f, const double xyz[3], Datum centroid,
					   double limit_m, Candidate **out);
extern int ModelFirstOfGroup(Model *c, const CandidateFilter *f);
extern int ModelTerritories(Model *c, const char *country, const char *postal, const char *county,
							const char *state, int brand, const ModelTerritory ***out);
extern double SphereMeters(const double a[3], const double b[3]);
extern void UnitVector(double lat, double lon, double xyz[3]);

#endif /* AIMROUTE_MODEL_H */
