/*
 * pg_shim.c
 *		The backend services the fuzzed source files need, outside the
 *		server (see pg_shim.h for what is provided and how faithfully).
 *
 * Each function here follows the documented behaviour of the server's
 * function of the same name, as far as aimroute's code can observe it;
 * where the shim cannot do what the server does (a database, another
 * server encoding) it says so and aborts rather than pretend.
 */
#include "postgres.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/memnodes.h"
#include "catalog/pg_authid.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "pg_shim.h"
#include "postgis.h"

/* ---------------------------------------------------------------------
 * Memory contexts
 *
 * A context owns a list of chunks, each a malloc() block with a header.
 * Reset frees the chunks and deletes the children, as the server does;
 * freed memory goes back to malloc, so AddressSanitizer catches a use of
 * memory after its context was reset.
 * ---------------------------------------------------------------------
 */
typedef struct ShimChunk
{
	struct ShimContext *context;
	struct ShimChunk *prev;
	struct ShimChunk *next;
	Size size;
} ShimChunk;

#define CHUNK_HDRSZ MAXALIGN(sizeof(ShimChunk))

typedef struct ShimContext
{
	MemoryContextData header; /* parent and children links are used */
	ShimChunk chunks;		  /* sentinel of a circular list */
} ShimContext;

MemoryContext CurrentMemoryContext = NULL;
static MemoryContext iteration_context = NULL;
int shim_database_encoding = PG_UTF8;

static MemoryContext
ShimContextCreate(MemoryContext parent, const char *name)
{
	ShimContext *c = calloc(1, sizeof(ShimContext));

	if (c == NULL)
		abort();
	c->header.type = T_AllocSetContext;
	c->header.name = name;
	c->header.parent = parent;
	c->chunks.prev = c->chunks.next = &c->chunks;
	if (parent != NULL)
	{
		c->header.nextchild = parent->firstchild;
		if (parent->firstchild != NULL)
			parent->firstchild->prevchild = (MemoryContext) c;
		parent->firstchild = (MemoryContext) c;
	}
	return (MemoryContext) c;
}

void MemoryContextDelete(MemoryContext context);

void
MemoryContextReset(MemoryContext context)
{
	ShimContext *c = (ShimContext *) context;

	while (context->firstchild != NULL)
		MemoryContextDelete(context->firstchild);
	while (c->chunks.next != &c->chunks)
	{
		ShimChunk *ch = c->chunks.next;

		ch->prev->next = ch->next;
		ch->next->prev = ch->prev;
		free(ch);
	}
	context->isReset = true;
}

void
MemoryContextDelete(MemoryContext context)
{
	MemoryContext parent = context->parent;

	MemoryContextReset(context);
	if (parent != NULL)
	{
		if (context->prevchild != NULL)
			context->prevchild->nextchild = context->nextchild;
		else
			parent->firstchild = context->nextchild;
		if (context->nextchild != NULL)
			context->nextchild->prevchild = context->prevchild;
	}
	if (CurrentMemoryContext == context)
		CurrentMemoryContext = parent;
	free(context);
}

MemoryContext
AllocSetContextCreateInternal(MemoryContext parent, const char *name, Size minContextSize,
							  Size initBlockSize, Size maxBlockSize)
{
	return ShimContextCreate(parent, name);
}

static void *
ShimAlloc(MemoryContext context, Size size, int flags)
{
	ShimContext *c = (ShimContext *) context;
	ShimChunk *ch;

	if (context == NULL)
		shim_fail("palloc with no current memory context");
	if (!((flags & MCXT_ALLOC_HUGE) ? AllocHugeSizeIsValid(size) : AllocSizeIsValid(size)))
		elog(ERROR, "invalid memory alloc request size %zu", size);
	ch = malloc(CHUNK_HDRSZ + size);
	if (ch == NULL)
	{
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}
	ch->context = c;
	ch->size = size;
	ch->next = c->chunks.next;
	ch->prev = &c->chunks;
	c->chunks.next->prev = ch;
	c->chunks.next = ch;
	context->isReset = false;
	if (flags & MCXT_ALLOC_ZERO)
		memset((char *) ch + CHUNK_HDRSZ, 0, size);
	return (char *) ch + CHUNK_HDRSZ;
}

void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	return ShimAlloc(context, size, 0);
}

void *
MemoryContextAllocZero(MemoryContext context, Size size)
{
	return ShimAlloc(context, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	return ShimAlloc(context, size, flags);
}

void *
palloc(Size size)
{
	return ShimAlloc(CurrentMemoryContext, size, 0);
}

void *
palloc0(Size size)
{
	return ShimAlloc(CurrentMemoryContext, size, MCXT_ALLOC_ZERO);
}

void *
palloc_extended(Size size, int flags)
{
	return ShimAlloc(CurrentMemoryContext, size, flags);
}

void
pfree(void *pointer)
{
	ShimChunk *ch = (ShimChunk *) ((char *) pointer - CHUNK_HDRSZ);

	ch->prev->next = ch->next;
	ch->next->prev = ch->prev;
	free(ch);
}

void *
repalloc(void *pointer, Size size)
{
	ShimChunk *old = (ShimChunk *) ((char *) pointer - CHUNK_HDRSZ);
	MemoryContext context = (MemoryContext) old->context;
	void *p;

	if (!AllocSizeIsValid(size))
		elog(ERROR, "invalid memory alloc request size %zu", size);
	p = ShimAlloc(context, size, 0);
	memcpy(p, pointer, Min(size, old->size));
	pfree(pointer);
	return p;
}

char *
MemoryContextStrdup(MemoryContext context, const char *string)
{
	Size len = strlen(string) + 1;
	char *p = MemoryContextAlloc(context, len);

	memcpy(p, string, len);
	return p;
}

char *
pstrdup(const char *in)
{
	return MemoryContextStrdup(CurrentMemoryContext, in);
}

char *
pnstrdup(const char *in, Size len)
{
	char *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

/* ---------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------
 */
sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;
ShimError shim_last_error;
static int saved_errno;

void
shim_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\n*** aimroute fuzz: invariant broken: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

bool
errstart(int elevel, const char *domain)
{
	saved_errno = errno;
	memset(&shim_last_error, 0, sizeof(shim_last_error));
	shim_last_error.elevel = elevel;
	shim_last_error.sqlerrcode = elevel >= ERROR	 ? ERRCODE_INTERNAL_ERROR
								 : elevel == WARNING ? ERRCODE_WARNING
													 : ERRCODE_SUCCESSFUL_COMPLETION;
	/* Always true: messages below ERROR are formatted too, to check them. */
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	shim_last_error.filename = filename;
	shim_last_error.lineno = lineno;
	if (shim_last_error.elevel < ERROR)
		return;
	if (shim_last_error.elevel == ERROR && PG_exception_stack != NULL)
		siglongjmp(*PG_exception_stack, 1);
	/* An ERROR nobody expects, or FATAL/PANIC: a bug of the code under test. */
	fprintf(stderr, "\n*** aimroute fuzz: unexpected %s at %s:%d (%s): SQLSTATE %s: %s\n",
			shim_last_error.elevel == ERROR ? "ERROR" : "FATAL/PANIC", filename, lineno,
			funcname ? funcname : "?", unpack_sql_state(shim_last_error.sqlerrcode),
			shim_last_error.message);
	abort();
}

void
pg_re_throw(void)
{
	if (PG_exception_stack != NULL)
		siglongjmp(*PG_exception_stack, 1);
	shim_fail("an ERROR was re-thrown with no PG_TRY to catch it: %s", shim_last_error.message);
}

char *
unpack_sql_state(int sql_state)
{
	static char buf[12];

	for (int i = 0; i < 5; i++)
	{
		buf[i] = PGUNSIXBIT(sql_state);
		sql_state >>= 6;
	}
	buf[5] = '\0';
	return buf;
}

int
errcode(int sqlerrcode)
{
	shim_last_error.sqlerrcode = sqlerrcode;
	return 0;
}

int
errcode_for_file_access(void)
{
	/* The mapping of the server's errcode_for_file_access(). */
	switch (saved_errno)
	{
		case EPERM:
		case EACCES:
#ifdef EROFS
		case EROFS:
#endif
			return errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
		case ENOENT:
			return errcode(ERRCODE_UNDEFINED_FILE);
		case EEXIST:
			return errcode(ERRCODE_DUPLICATE_FILE);
		case ENOTDIR:
		case EISDIR:
		case ENOTEMPTY:
			return errcode(ERRCODE_WRONG_OBJECT_TYPE);
		case ENOSPC:
			return errcode(ERRCODE_DISK_FULL);
		case ENFILE:
		case EMFILE:
			return errcode(ERRCODE_INSUFFICIENT_RESOURCES);
		case EIO:
			return errcode(ERRCODE_IO_ERROR);
		default:
			return errcode(ERRCODE_INTERNAL_ERROR);
	}
}

#define SHIM_FORMAT(buf, fmt)                                                                      \
	do                                                                                             \
	{                                                                                              \
		va_list ap;                                                                                \
		errno = saved_errno;                                                                       \
		va_start(ap, fmt);                                                                         \
		vsnprintf(buf, sizeof(buf), fmt, ap);                                                      \
		va_end(ap);                                                                                \
	} while (0)

int
errmsg(const char *fmt, ...)
{
	SHIM_FORMAT(shim_last_error.message, fmt);
	return 0;
}

int
errmsg_internal(const char *fmt, ...)
{
	SHIM_FORMAT(shim_last_error.message, fmt);
	return 0;
}

int
errdetail(const char *fmt, ...)
{
	SHIM_FORMAT(shim_last_error.detail, fmt);
	return 0;
}

int
errhint(const char *fmt, ...)
{
	char hint[2048];

	SHIM_FORMAT(hint, fmt);
	return 0;
}

/* ---------------------------------------------------------------------
 * Interrupts: none arrive in a fuzzing process.
 * ---------------------------------------------------------------------
 */
volatile sig_atomic_t InterruptPending = false;

void
ProcessInterrupts(void)
{
}

/* ---------------------------------------------------------------------
 * Text and encodings
 * ---------------------------------------------------------------------
 */
struct varlena *
pg_detoast_datum_packed(struct varlena *datum)
{
	if (VARATT_IS_COMPRESSED(datum) || VARATT_IS_EXTERNAL(datum))
		shim_fail("a compressed or external datum reached the shim");
	return datum;
}

text *
cstring_to_text_with_len(const char *s, int len)
{
	text *result = palloc(len + VARHDRSZ);

	SET_VARSIZE(result, len + VARHDRSZ);
	memcpy(VARDATA(result), s, len);
	return result;
}

text *
cstring_to_text(const char *s)
{
	return cstring_to_text_with_len(s, strlen(s));
}

char *
text_to_cstring(const text *t)
{
	text *tunpacked = (text *) pg_detoast_datum_packed(unconstify(text *, t));
	int len = VARSIZE_ANY_EXHDR(tunpacked);
	char *result = palloc(len + 1);

	memcpy(result, VARDATA_ANY(tunpacked), len);
	result[len] = '\0';
	return result;
}

text *
shim_text(const char *data, int len, bool short_header)
{
	if (short_header && len + VARHDRSZ_SHORT <= VARATT_SHORT_MAX)
	{
		text *t = palloc(len + VARHDRSZ_SHORT);

		SET_VARSIZE_SHORT(t, len + VARHDRSZ_SHORT);
		memcpy(VARDATA_SHORT(t), data, len);
		return t;
	}
	return cstring_to_text_with_len(data, len);
}

int
GetDatabaseEncoding(void)
{
	return shim_database_encoding;
}

const char *
GetDatabaseEncodingName(void)
{
	return pg_encoding_to_char(shim_database_encoding);
}

bool
shim_is_valid_encoding(const char *s, int len)
{
	return pg_encoding_verifymbstr(shim_database_encoding, s, len) == len;
}

static bool
VerifyString(int encoding, const char *s, int len, bool noError)
{
	int ok = pg_encoding_verifymbstr(encoding, s, len);

	if (ok == len)
		return true;
	if (noError)
		return false;
	ereport(ERROR, (errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
					errmsg("invalid byte sequence for encoding \"%s\": 0x%02x",
						   pg_encoding_to_char(encoding), (unsigned char) s[ok])));
	return false;
}

bool
pg_verifymbstr(const char *mbstr, int len, bool noError)
{
	return VerifyString(shim_database_encoding, mbstr, len, noError);
}

/* The shim's databases are UTF8 or SQL_ASCII: no conversion is ever needed. */
static void
CheckShimEncoding(int encoding)
{
	if (shim_database_encoding != PG_UTF8 && shim_database_encoding != PG_SQL_ASCII)
		shim_fail("the shim supports UTF8 and SQL_ASCII databases only");
	if (encoding != PG_UTF8 && encoding != PG_SQL_ASCII && encoding != shim_database_encoding)
		shim_fail("the shim cannot convert to or from %s", pg_encoding_to_char(encoding));
}

char *
pg_server_to_any(const char *s, int len, int encoding)
{
	CheckShimEncoding(encoding);
	if (len <= 0 || encoding == shim_database_encoding || encoding == PG_SQL_ASCII)
		return unconstify(char *, s);
	/* SQL_ASCII database: nothing to convert, but the result must be valid. */
	VerifyString(encoding, s, len, false);
	return unconstify(char *, s);
}

char *
pg_any_to_server(const char *s, int len, int encoding)
{
	CheckShimEncoding(encoding);
	if (len <= 0)
		return unconstify(char *, s);
	if (encoding == shim_database_encoding || encoding == PG_SQL_ASCII)
	{
		VerifyString(shim_database_encoding, s, len, false);
		return unconstify(char *, s);
	}
	VerifyString(encoding, s, len, false);
	return unconstify(char *, s);
}

int
pg_mbcliplen(const char *mbstr, int len, int limit)
{
	int clen = 0;

	if (pg_encoding_max_length(shim_database_encoding) == 1)
	{
		len = Min(len, limit);
		while (clen < len && mbstr[clen])
			clen++;
		return clen;
	}
	while (len > 0 && *mbstr)
	{
		int l = pg_encoding_mblen(shim_database_encoding, mbstr);

		if (clen + l > limit)
			break;
		clen += l;
		if (clen == limit)
			break;
		len -= l;
		mbstr += l;
	}
	return clen;
}

/* The server's scanner_isspace(): the white space of SQL's lexer. */
bool
scanner_isspace(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f';
}

/* ---------------------------------------------------------------------
 * SPI: statements go to the harness's hook.  SPI_connect switches to a
 * procedure context that SPI_finish deletes, as the server does; plans
 * not kept are freed then too.
 * ---------------------------------------------------------------------
 */
struct _SPI_plan
{
	char *query;
	int nargs;
	Oid argtypes[16];
	bool kept;
	struct _SPI_plan *next_temp;
};

ShimSpiHook shim_spi_hook = NULL;
uint64 shim_spi_processed = 0;
Datum shim_spi_result[8];
bool shim_spi_result_null[8];
int shim_spi_depth = 0;

uint64 SPI_processed = 0;
SPITupleTable *SPI_tuptable = NULL;
int SPI_result = 0;

static SPITupleTable shim_tuptable;
static HeapTuple shim_tuples[1];
static MemoryContext spi_saved[8];
static MemoryContext spi_proc[8];
static struct _SPI_plan *spi_temp_plans[8];

int
SPI_connect(void)
{
	if (shim_spi_depth >= (int) lengthof(spi_saved))
		shim_fail("SPI_connect nested too deep");
	spi_saved[shim_spi_depth] = CurrentMemoryContext;
	spi_proc[shim_spi_depth] = ShimContextCreate(CurrentMemoryContext, "SPI Proc");
	spi_temp_plans[shim_spi_depth] = NULL;
	CurrentMemoryContext = spi_proc[shim_spi_depth];
	shim_spi_depth++;
	return SPI_OK_CONNECT;
}

static void
FreeTempPlans(int level)
{
	while (spi_temp_plans[level] != NULL)
	{
		struct _SPI_plan *p = spi_temp_plans[level];

		spi_temp_plans[level] = p->next_temp;
		free(p->query);
		free(p);
	}
}

int
SPI_finish(void)
{
	if (shim_spi_depth == 0)
		shim_fail("SPI_finish without SPI_connect");
	shim_spi_depth--;
	CurrentMemoryContext = spi_saved[shim_spi_depth];
	MemoryContextDelete(spi_proc[shim_spi_depth]);
	FreeTempPlans(shim_spi_depth);
	return SPI_OK_FINISH;
}

SPIPlanPtr
SPI_prepare(const char *src, int nargs, Oid *argtypes)
{
	struct _SPI_plan *p;

	if (shim_spi_depth == 0)
		shim_fail("SPI_prepare outside SPI_connect");
	if (nargs > 16)
		shim_fail("SPI_prepare: too many arguments for the shim");
	p = calloc(1, sizeof(*p));
	p->query = strdup(src);
	p->nargs = nargs;
	if (nargs > 0)
		memcpy(p->argtypes, argtypes, sizeof(Oid) * nargs);
	p->next_temp = spi_temp_plans[shim_spi_depth - 1];
	spi_temp_plans[shim_spi_depth - 1] = p;
	return p;
}

SPIPlanPtr
SPI_prepare_cursor(const char *src, int nargs, Oid *argtypes, int cursorOptions)
{
	return SPI_prepare(src, nargs, argtypes);
}

int
SPI_keepplan(SPIPlanPtr plan)
{
	struct _SPI_plan **link = &spi_temp_plans[shim_spi_depth - 1];

	/* Kept plans live as long as the process, like the server's cached ones. */
	while (*link != NULL && *link != plan)
		link = &(*link)->next_temp;
	if (*link == NULL)
		shim_fail("SPI_keepplan of a plan not prepared in this SPI connection");
	*link = plan->next_temp;
	plan->kept = true;
	return 0;
}

const char *
SPI_result_code_string(int code)
{
	return "SPI result (shim)";
}

static int
RunStatement(const char *query, int nargs, const Oid *argtypes, Datum *values, const char *nulls)
{
	int rc;

	if (shim_spi_depth == 0)
		shim_fail("statement run outside SPI_connect: %s", query);
	if (shim_spi_hook == NULL)
		shim_fail("no SPI hook for: %s", query);
	shim_spi_processed = 0;
	memset(shim_spi_result_null, true, sizeof(shim_spi_result_null));
	rc = shim_spi_hook(query, nargs, argtypes, values, nulls);
	SPI_processed = shim_spi_processed;
	shim_tuptable.vals = shim_tuples;
	shim_tuptable.numvals = SPI_processed;
	SPI_tuptable = &shim_tuptable;
	return rc;
}

int
SPI_execute_plan(SPIPlanPtr plan, Datum *Values, const char *Nulls, bool read_only, long tcount)
{
	return RunStatement(plan->query, plan->nargs, plan->argtypes, Values, Nulls);
}

int
SPI_execute_with_args(const char *src, int nargs, Oid *argtypes, Datum *Values, const char *Nulls,
					  bool read_only, long tcount)
{
	return RunStatement(src, nargs, argtypes, Values, Nulls);
}

Datum
SPI_getbinval(HeapTuple tuple, TupleDesc tupdesc, int fnumber, bool *isnull)
{
	if (fnumber < 1 || fnumber > (int) lengthof(shim_spi_result))
		shim_fail("SPI_getbinval: column %d out of the shim's range", fnumber);
	*isnull = shim_spi_result_null[fnumber - 1];
	return shim_spi_result[fnumber - 1];
}

/* ---------------------------------------------------------------------
 * What the loader needs besides: privileges, paths, a string-keyed hash
 * table, array building, the PostGIS schema.
 * ---------------------------------------------------------------------
 */
char my_exec_path[MAXPGPATH] = "/nonexistent/bin/postgres";

Oid
GetUserId(void)
{
	return BOOTSTRAP_SUPERUSERID;
}

bool
has_privs_of_role(Oid member, Oid role)
{
	return true; /* the fuzzing "user" is a superuser */
}

const char *
PostgisSchema(void)
{
	return "public";
}

typedef struct ShimHashEntry
{
	struct ShimHashEntry *next;
	/* the entry (key first) follows, MAXALIGNed */
} ShimHashEntry;

#define SHIM_HASH_BUCKETS 1024
#define ENTRY_DATA(e)	  ((char *) (e) + MAXALIGN(sizeof(ShimHashEntry)))

struct HTAB
{
	MemoryContext context;
	Size keysize;
	Size entrysize;
	ShimHashEntry *buckets[SHIM_HASH_BUCKETS];
};

HTAB *
hash_create(const char *tabname, long nelem, const HASHCTL *info, int flags)
{
	MemoryContext context = (flags & HASH_CONTEXT) ? info->hcxt : CurrentMemoryContext;
	HTAB *h;

	if (!(flags & HASH_ELEM) || !(flags & HASH_STRINGS))
		shim_fail("the shim's hash tables take string keys only (%s)", tabname);
	h = MemoryContextAllocZero(context, sizeof(HTAB));
	h->context = context;
	h->keysize = info->keysize;
	h->entrysize = info->entrysize;
	return h;
}

void *
hash_search(HTAB *hashp, const void *keyPtr, HASHACTION action, bool *foundPtr)
{
	/* String keys compare on at most keysize - 1 bytes, as the server's. */
	Size n = strnlen((const char *) keyPtr, hashp->keysize - 1);
	uint32 h = 2166136261u;
	ShimHashEntry **link;
	ShimHashEntry *e;

	for (Size i = 0; i < n; i++)
		h = (h ^ ((const unsigned char *) keyPtr)[i]) * 16777619u;
	link = &hashp->buckets[h % SHIM_HASH_BUCKETS];
	for (e = *link; e != NULL; link = &e->next, e = e->next)
		if (strncmp(ENTRY_DATA(e), keyPtr, hashp->keysize - 1) == 0)
			break;
	if (foundPtr)
		*foundPtr = e != NULL;
	switch (action)
	{
		case HASH_FIND:
			return e ? ENTRY_DATA(e) : NULL;
		case HASH_REMOVE:
			if (e)
				*link = e->next;
			return e ? ENTRY_DATA(e) : NULL;
		case HASH_ENTER:
		case HASH_ENTER_NULL:
			if (e)
				return ENTRY_DATA(e);
			e = MemoryContextAllocZero(hashp->context,
									   MAXALIGN(sizeof(ShimHashEntry)) + hashp->entrysize);
			strlcpy(ENTRY_DATA(e), keyPtr, hashp->keysize);
			e->next = hashp->buckets[h % SHIM_HASH_BUCKETS];
			hashp->buckets[h % SHIM_HASH_BUCKETS] = e;
			return ENTRY_DATA(e);
	}
	return NULL;
}

ArrayBuildState *
accumArrayResult(ArrayBuildState *astate, Datum dvalue, bool disnull, Oid element_type,
				 MemoryContext rcontext)
{
	MemoryContext old;

	if (astate == NULL)
	{
		MemoryContext c = ShimContextCreate(rcontext, "accumArrayResult");

		astate = MemoryContextAllocZero(c, sizeof(ArrayBuildState));
		astate->mcontext = c;
		astate->private_cxt = true;
		astate->element_type = element_type;
		astate->alen = 64;
		astate->dvalues = MemoryContextAlloc(c, astate->alen * sizeof(Datum));
		astate->dnulls = MemoryContextAlloc(c, astate->alen * sizeof(bool));
		switch (element_type)
		{
			case TEXTOID:
				astate->typlen = -1;
				astate->typbyval = false;
				break;
			case FLOAT8OID:
			case INT8OID:
				astate->typlen = 8;
				astate->typbyval = FLOAT8PASSBYVAL;
				break;
			default:
				shim_fail("accumArrayResult: element type %u not in the shim", element_type);
		}
	}
	else if (astate->element_type != element_type)
		shim_fail("accumArrayResult: element type changed from %u to %u", astate->element_type,
				  element_type);

	old = MemoryContextSwitchTo(astate->mcontext);
	if (astate->nelems >= astate->alen)
	{
		astate->alen *= 2;
		astate->dvalues = repalloc(astate->dvalues, astate->alen * sizeof(Datum));
		astate->dnulls = repalloc(astate->dnulls, astate->alen * sizeof(bool));
	}
	if (!disnull && !astate->typbyval)
	{
		struct varlena *v = (struct varlena *) DatumGetPointer(dvalue);
		Size size = VARSIZE_ANY(v);
		void *copy = palloc(size);

		memcpy(copy, v, size);
		dvalue = PointerGetDatum(copy);
	}
	astate->dvalues[astate->nelems] = disnull ? (Datum) 0 : dvalue;
	astate->dnulls[astate->nelems] = disnull;
	astate->nelems++;
	MemoryContextSwitchTo(old);
	return astate;
}

Datum
makeArrayResult(ArrayBuildState *astate, MemoryContext rcontext)
{
	/*
	 * Not an ArrayType: a ShimArray the SPI hook reads.  Like the server's,
	 * it copies the values into rcontext and deletes the build state's
	 * private context.
	 */
	ShimArray *a = MemoryContextAllocZero(rcontext, sizeof(ShimArray));
	MemoryContext old = MemoryContextSwitchTo(rcontext);

	a->magic = SHIM_ARRAY_MAGIC;
	a->element_type = astate->element_type;
	a->nelems = astate->nelems;
	a->values = palloc(sizeof(Datum) * Max(a->nelems, 1));
	a->nulls = palloc(sizeof(bool) * Max(a->nelems, 1));
	for (int i = 0; i < a->nelems; i++)
	{
		a->nulls[i] = astate->dnulls[i];
		a->values[i] = astate->dvalues[i];
		if (!a->nulls[i] && !astate->typbyval)
		{
			struct varlena *v = (struct varlena *) DatumGetPointer(astate->dvalues[i]);
			void *copy = palloc(VARSIZE_ANY(v));

			memcpy(copy, v, VARSIZE_ANY(v));
			a->values[i] = PointerGetDatum(copy);
		}
	}
	MemoryContextSwitchTo(old);
	if (astate->private_cxt)
		MemoryContextDelete(astate->mcontext);
	return PointerGetDatum(a);
}

/* ---------------------------------------------------------------------
 * GUC: search_path alone, as search_path.c sets and restores it around
 * its SPI statements; a restore out of order fails the run.
 * ---------------------------------------------------------------------
 */
char *namespace_search_path = "\"$user\", public";
static char *guc_saved_path[8];
static int guc_nest_level = 0;

int
NewGUCNestLevel(void)
{
	if (guc_nest_level >= (int) lengthof(guc_saved_path))
		shim_fail("NewGUCNestLevel nested too deep");
	guc_saved_path[guc_nest_level] = namespace_search_path;
	return ++guc_nest_level;
}

int
set_config_option(const char *name, const char *value, GucContext context, GucSource source,
				  GucAction action, bool changeVal, int elevel, bool is_reload)
{
	if (strcmp(name, "search_path") != 0 || action != GUC_ACTION_SAVE || guc_nest_level == 0)
		shim_fail("set_config_option: only search_path, saved at a new nest level");
	if (changeVal)
		namespace_search_path = (char *) value;
	return 1;
}

void
AtEOXact_GUC(bool isCommit, int nestLevel)
{
	if (nestLevel != guc_nest_level)
		shim_fail("AtEOXact_GUC(%d) at nest level %d", nestLevel, guc_nest_level);
	namespace_search_path = guc_saved_path[--guc_nest_level];
}

/* ---------------------------------------------------------------------
 * Iterations
 * ---------------------------------------------------------------------
 */
void
shim_begin(int database_encoding)
{
	shim_database_encoding = database_encoding;
	if (iteration_context == NULL)
		iteration_context = ShimContextCreate(NULL, "fuzz iteration");
	CurrentMemoryContext = iteration_context;
	PG_exception_stack = NULL;
	error_context_stack = NULL;
	memset(&shim_last_error, 0, sizeof(shim_last_error));
}

void
shim_after_error(void)
{
	/* What transaction abort does for SPI: forget the connections. */
	while (shim_spi_depth > 0)
	{
		shim_spi_depth--;
		FreeTempPlans(shim_spi_depth);
	}
	/* And for settings: those of the aborted statements are undone. */
	if (guc_nest_level > 0)
		AtEOXact_GUC(false, 1);
	CurrentMemoryContext = iteration_context;
	PG_exception_stack = NULL;
	error_context_stack = NULL;
}

void
shim_end(void)
{
	if (shim_spi_depth != 0)
		shim_fail("SPI_connect without SPI_finish (%d left open)", shim_spi_depth);
	if (guc_nest_level != 0)
		shim_fail("search_path set and not restored (%d levels left)", guc_nest_level);
	if (PG_exception_stack != NULL)
		shim_fail("PG_exception_stack left set");
	CurrentMemoryContext = iteration_context;
	MemoryContextReset(iteration_context);
}
