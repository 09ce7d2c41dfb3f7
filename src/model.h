/*
 * model.h
 *		The routing configuration held in each backend's memory: dealers,
 *		brands, territories, products, stock and settings, with a spatial
 *		index per country and brand, rebuilt whenever the configuration's
 *		version changes.
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
	char **radius_countries;
	int nradius_countries;
	char *default_dealer;
	bool product_routing;
	bool inventory_routing;
	RerouteSettings reroute;
} RoutingSettings;

typedef struct ModelDealer
{
	char *number;
	char *country;
	char *group; /* NULL: none */
	bool active;
	bool has_location;
	double xyz[3];	/* unit vector */
	Datum location; /* geography */
	int *brands;	/* sorted brand indexes */
	int nbrands;
	int *products; /* sorted product indexes of its assignments */
	int nproducts;
	int *stock; /* sorted product indexes with quantity > 0 */
	int nstock;
} ModelDealer;

/* A 3-d tree over unit vectors, stored as an implicit balanced tree. */
typedef struct KdTree
{
	int n;
	int *dealer;		/* dealer index of each node */
	double (*pt)[3];	/* its point */
	unsigned char *dim; /* its split axis */
} KdTree;

/* The active dealers of one country that sell one brand. */
typedef struct BrandTree
{
	const char *country;
	int brand;
	KdTree tree;
} BrandTree;

typedef struct ModelTerritory
{
	const char *country;
	const char *code; /* "" for kind country: any code of the country */
	char kind;		  /* 'p'ostal, 'c'ounty, 's'tate, 'n'ation */
	int brand;		  /* -1: every brand the dealer sells */
	int dealer;
} ModelTerritory;

/* A dealer group's member in a country. */
typedef struct GroupMember
{
	const char *country;
	const char *group;
	int dealer;
} GroupMember;

typedef struct Model
{
	MemoryContext context;
	Oid version_relid;
	int64 version;
	RoutingSettings settings;
	ModelDealer *dealers; /* sorted by number: a lower index is a lower number */
	int ndealers;
	char **brand_codes; /* sorted */
	char **brand_names;
	int nbrands;
	char **product_codes; /* sorted */
	int **assigned;		  /* per product: dealers assigned it */
	int *nassigned;
	int **stocked; /* per product: dealers with it in stock */
	int *nstocked;
	int nproducts;
	BrandTree *trees; /* sorted by country, brand */
	int ntrees;
	ModelTerritory *territories; /* sorted by country, kind, code */
	int nterritories;
	GroupMember *groups; /* sorted by country, group, dealer */
	int ngroups;
	HTAB *places; /* postal codes looked up so far */
	char *arena;  /* where Keep carves the next piece */
	Size arena_left;
	TimestampTz built_at;
	double build_ms;
	FmgrInfo distance;		  /* PostGIS st_distance(geography, geography, boolean) */
	FmgrInfo to_geometry;	  /* PostGIS geometry(geography) */
	FmgrInfo st_x;			  /* PostGIS st_x(geometry) */
	FmgrInfo st_y;			  /* PostGIS st_y(geometry) */
	Oid postal_relid;		  /* aimroute.postal_codes */
	Oid postal_index;		  /* its primary key (country, postal_code) */
	AttrNumber postal_att[4]; /* place_name, state_code, county, centroid */
} Model;

/* Where a lead's postal code is, as aimroute.postal_codes says. */
typedef struct Place
{
	char key[40]; /* country, ':', the code as normalized lexically */
	char *code;	  /* the stored code (a Canadian code may fall back to its FSA) */
	bool known;	  /* found in aimroute.postal_codes */
	char *place_name;
	char *state_code;
	char *county;
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
extern bool ModelSells(const ModelDealer *d, int brand);
extern bool ModelAccepts(Model *c, const CandidateFilter *f, int dealer);
extern Place *ModelPlace(Model *c, const char *country, const char *lexical);
extern double ModelDistance(Model *c, int dealer, Datum centroid);
extern int ModelNearest(Model *c, const CandidateFilter *f, const double xyz[3], Datum centroid,
						double limit_m, Candidate **out);
extern int ModelFirstOfGroup(Model *c, const CandidateFilter *f);
extern int ModelTerritories(Model *c, const char *country, const char *postal, const char *county,
							const char *state, int brand, ModelTerritory ***out);
extern double SphereMeters(const double a[3], const double b[3]);
extern void UnitVector(double lat, double lon, double xyz[3]);

#endif /* AIMROUTE_MODEL_H */
