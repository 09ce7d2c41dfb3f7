--
-- test/upgrade/describe.sql: a text description of every object of the
-- extension aimroute, read from the catalogs of the current database.
--
-- t/009_upgrade.pl compares it between a database updated from 0.1.0 by
-- ALTER EXTENSION aimroute UPDATE and a fresh install of the current
-- version: the two must be equal (docs/upgrading.md).  pg_dump cannot do
-- this, as it leaves an extension's own objects out.
--
-- What it covers: the objects that belong to the extension (pg_depend
-- deptype 'e') and everything that hangs off them (deptype 'a' or 'i':
-- columns' defaults, constraints, indexes, triggers, policies, rules,
-- identity sequences, composite types' attributes); for each its owner,
-- its privileges (NULL ACLs as their defaults), its comment and its
-- definition.  Roles aimroute_*: their attributes, memberships, comments
-- and the privileges they hold on objects outside the extension.
--
-- The output is one line per fact (definitions of functions and views
-- continue on lines indented by four spaces), sorted by the object it
-- describes, so that two databases with the same schema give the same
-- text and a difference reads as a unified diff.  No OID is printed: every
-- reference is by name, and every name is schema-qualified (the search
-- path below names no schema of aimroute or PostGIS).  Column order
-- matters to SELECT *: each table has a "columns" line in attnum order
-- (dropped columns left out); the columns' own lines are sorted by name.
--
-- Left out on purpose: the column option pg_attver=<number>, which the
-- PostgreSQL 15 server of this project's machines writes into the
-- attoptions of every column it creates (a WAL position: it differs
-- between any two databases); other column options are compared.
--
-- Run it with psql -X -A -t -f test/upgrade/describe.sql.
--
SET search_path = pg_catalog, pg_temp;

WITH RECURSIVE
ext AS (
    SELECT e.oid, e.extname, e.extowner, e.extnamespace, e.extrelocatable, e.extversion,
           e.extconfig, e.extcondition
      FROM pg_extension e WHERE e.extname = 'aimroute'
),
-- The extension's objects, its schema, and what hangs off them.
members(classid, objid) AS (
    SELECT d.classid, d.objid
      FROM pg_depend d JOIN ext ON d.refobjid = ext.oid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
    UNION
    SELECT 'pg_namespace'::regclass, ext.extnamespace FROM ext
    UNION
    SELECT d.classid, d.objid
      FROM pg_depend d JOIN members m ON d.refclassid = m.classid AND d.refobjid = m.objid
     WHERE d.deptype IN ('a', 'i')
),
-- Relations (not indexes or TOAST tables: see below), labelled by kind.
rels AS (
    SELECT c.*,
           CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'p' THEN 'partitioned table '
                          WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '
                          WHEN 'S' THEN 'sequence ' WHEN 'c' THEN 'type ' WHEN 'f' THEN 'foreign table '
           END || CASE WHEN c.relkind = 'c' THEN format_type(c.reltype, NULL) ELSE c.oid::regclass::text END AS label
      FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'c', 'f')
),
cols AS (
    SELECT r.label AS rel_label, r.oid AS relid, a.*,
           r.label || ' column ' || quote_ident(a.attname) AS label
      FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid
     WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind <> 'S'
),
funcs AS (
    SELECT p.*,
           CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate ' ELSE 'function ' END
           || p.oid::regprocedure::text AS label
      FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
),
-- Types, without arrays and the row types of relations (their relations
-- describe them); composite types are described as relations too.
types AS (
    SELECT t.*, 'type ' || format_type(t.oid, NULL) AS label
      FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
     WHERE NOT EXISTS (SELECT FROM pg_type e WHERE e.typarray = t.oid)
       AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
),
cons AS (
    SELECT k.*,
           coalesce((SELECT r.label FROM rels r WHERE r.oid = k.conrelid),
                    (SELECT t.label FROM types t WHERE t.oid = k.contypid)) AS owner_label
      FROM pg_constraint k JOIN members m ON m.classid = 'pg_constraint'::regclass AND m.objid = k.oid
),
idx AS (
    SELECT i.indexrelid AS oid, i.*, ic.relname, ic.reloptions, r.label AS owner_label
      FROM pg_index i
      JOIN rels r ON r.oid = i.indrelid
      JOIN pg_class ic ON ic.oid = i.indexrelid
),
trigs AS (
    SELECT g.*, r.label AS owner_label
      FROM pg_trigger g JOIN rels r ON r.oid = g.tgrelid
     WHERE NOT g.tgisinternal
),
pols AS (
    SELECT p.*, r.label AS owner_label
      FROM pg_policy p JOIN rels r ON r.oid = p.polrelid
),
rules AS (
    SELECT w.*, r.label AS owner_label
      FROM pg_rewrite w JOIN rels r ON r.oid = w.ev_class
     WHERE w.rulename <> '_RETURN'
),
opers AS (
    SELECT o.*, 'operator ' || o.oid::regoperator::text AS label
      FROM pg_operator o JOIN members m ON m.classid = 'pg_operator'::regclass AND m.objid = o.oid
),
schemas AS (
    SELECT n.*, 'schema ' || quote_ident(n.nspname) AS label
      FROM pg_namespace n JOIN members m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
),
-- Every described object, for its comment: (class, object, sub-object),
-- where its lines sort (k1, k2, k3) and its label.
described(classid, objid, objsubid, k1, k2, k3, label) AS (
    SELECT 'pg_extension'::regclass, ext.oid, 0, 'extension ' || quote_ident(ext.extname), 0, '',
           'extension ' || quote_ident(ext.extname) FROM ext
    UNION ALL SELECT 'pg_namespace'::regclass, s.oid, 0, s.label, 0, '', s.label FROM schemas s
    UNION ALL SELECT 'pg_class'::regclass, r.oid, 0, r.label, 0, '', r.label FROM rels r
    UNION ALL SELECT 'pg_class'::regclass, c.relid, c.attnum, c.rel_label, 20, c.attname, c.label FROM cols c
    UNION ALL SELECT 'pg_constraint'::regclass, k.oid, 0, k.owner_label, 30, k.conname,
                     k.owner_label || ' constraint ' || quote_ident(k.conname) FROM cons k
    UNION ALL SELECT 'pg_class'::regclass, i.oid, 0, i.owner_label, 40, i.relname,
                     i.owner_label || ' index ' || quote_ident(i.relname) FROM idx i
    UNION ALL SELECT 'pg_trigger'::regclass, g.oid, 0, g.owner_label, 50, g.tgname,
                     g.owner_label || ' trigger ' || quote_ident(g.tgname) FROM trigs g
    UNION ALL SELECT 'pg_policy'::regclass, p.oid, 0, p.owner_label, 60, p.polname,
                     p.owner_label || ' policy ' || quote_ident(p.polname) FROM pols p
    UNION ALL SELECT 'pg_rewrite'::regclass, w.oid, 0, w.owner_label, 70, w.rulename,
                     w.owner_label || ' rule ' || quote_ident(w.rulename) FROM rules w
    UNION ALL SELECT 'pg_proc'::regclass, f.oid, 0, f.label, 0, '', f.label FROM funcs f
    UNION ALL SELECT 'pg_type'::regclass, t.oid, 0, t.label, 0, '', t.label FROM types t
    UNION ALL SELECT 'pg_operator'::regclass, o.oid, 0, o.label, 0, '', o.label FROM opers o
),
-- Privileges: (k1, k2, k3, label, acl, owner, kind for acldefault); a
-- NULL ACL stands for the default privileges of its kind of object.
acls(k1, k2, k3, label, acl, owner, kind) AS (
    SELECT r.label, 0, '', r.label, r.relacl, r.relowner,
           CASE r.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char"
      FROM rels r WHERE r.relkind <> 'c'
    UNION ALL SELECT c.rel_label, 20, c.attname, c.label, c.attacl, NULL, 'c' FROM cols c
    UNION ALL SELECT f.label, 0, '', f.label, f.proacl, f.proowner, 'f' FROM funcs f
    UNION ALL SELECT t.label, 0, '', t.label, t.typacl, t.typowner, 'T' FROM types t
    UNION ALL SELECT s.label, 0, '', s.label, s.nspacl, s.nspowner, 'n' FROM schemas s
),
lines(k1, k2, k3, k4, line) AS (
    -- The extension.
    SELECT 'extension ' || quote_ident(ext.extname), 0, '', 0,
           format('extension %I: version %s, schema %I, owner %s, relocatable %s',
                  ext.extname, ext.extversion, n.nspname, pg_get_userbyid(ext.extowner), ext.extrelocatable)
      FROM ext JOIN pg_namespace n ON n.oid = ext.extnamespace
    UNION ALL
    SELECT 'extension ' || quote_ident(ext.extname), 5, x.extname, 0,
           format('extension %I: requires %I', ext.extname, x.extname)
      FROM ext
      JOIN pg_depend d ON d.classid = 'pg_extension'::regclass AND d.objid = ext.oid
                      AND d.refclassid = 'pg_extension'::regclass
      JOIN pg_extension x ON x.oid = d.refobjid
    UNION ALL
    SELECT 'extension ' || quote_ident(ext.extname), 6, c.tab::regclass::text, 0,
           format('extension %I: configuration table %s, condition %L', ext.extname, c.tab::regclass, c.cond)
      FROM ext, unnest(ext.extconfig, ext.extcondition) AS c(tab, cond)

    -- Schemas.
    UNION ALL
    SELECT s.label, 0, '', 0, s.label || ': owner ' || pg_get_userbyid(s.nspowner) FROM schemas s

    -- Relations.
    UNION ALL
    SELECT r.label, 0, '', 0,
           r.label || ': ' || concat_ws(', ',
               CASE WHEN r.relkind <> 'c' THEN 'owner ' || pg_get_userbyid(r.relowner) END,
               CASE r.relpersistence WHEN 'u' THEN 'unlogged' WHEN 't' THEN 'temporary' END,
               CASE WHEN r.relkind IN ('r', 'p') THEN
                    'row security ' || CASE WHEN r.relrowsecurity THEN 'enabled' ELSE 'disabled' END
                    || CASE WHEN r.relforcerowsecurity THEN ' and forced' ELSE '' END END,
               CASE WHEN r.relkind IN ('r', 'p', 'm') THEN
                    'replica identity ' || CASE r.relreplident WHEN 'd' THEN 'default' WHEN 'n' THEN 'nothing'
                                                               WHEN 'f' THEN 'full' ELSE 'index' END END,
               (SELECT 'access method ' || am.amname FROM pg_am am WHERE am.oid = r.relam),
               (SELECT 'tablespace ' || ts.spcname FROM pg_tablespace ts WHERE ts.oid = r.reltablespace),
               'options ' || nullif(array_to_string(ARRAY(SELECT o FROM unnest(r.reloptions) o ORDER BY o), ', '), ''),
               CASE WHEN r.relkind = 'p' THEN 'partitioned by ' || pg_get_partkeydef(r.oid) END,
               CASE WHEN r.relispartition THEN 'partition ' || pg_get_expr(r.relpartbound, r.oid) END,
               (SELECT 'inherits ' || string_agg(h.inhparent::regclass::text, ', ' ORDER BY h.inhseqno)
                  FROM pg_inherits h WHERE h.inhrelid = r.oid))
      FROM rels r WHERE r.relkind <> 'c'
    UNION ALL
    SELECT r.label, 10, '', 0,
           r.label || ': columns (' || coalesce(string_agg(quote_ident(c.attname), ', ' ORDER BY c.attnum), '') || ')'
      FROM rels r LEFT JOIN cols c ON c.relid = r.oid
     WHERE r.relkind <> 'S'
     GROUP BY r.label
    UNION ALL
    SELECT c.rel_label, 20, c.attname, 0,
           c.label || ': ' || concat_ws(' ',
               format_type(c.atttypid, c.atttypmod),
               (SELECT 'COLLATE ' || quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                  FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                 WHERE co.oid = c.attcollation
                   AND c.attcollation <> (SELECT t.typcollation FROM pg_type t WHERE t.oid = c.atttypid)),
               CASE WHEN c.attnotnull THEN 'NOT NULL' END,
               CASE c.attidentity WHEN 'a' THEN 'GENERATED ALWAYS AS IDENTITY'
                                  WHEN 'd' THEN 'GENERATED BY DEFAULT AS IDENTITY' END,
               (SELECT CASE WHEN c.attgenerated = 's' THEN 'GENERATED ALWAYS AS (' || pg_get_expr(ad.adbin, ad.adrelid) || ') STORED'
                            ELSE 'DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid) END
                  FROM pg_attrdef ad WHERE ad.adrelid = c.relid AND ad.adnum = c.attnum),
               CASE WHEN c.attstattarget <> -1 THEN 'STATISTICS ' || c.attstattarget END,
               CASE WHEN c.attstorage <> (SELECT t.typstorage FROM pg_type t WHERE t.oid = c.atttypid)
                    THEN 'STORAGE ' || c.attstorage::text END,
               CASE WHEN c.attcompression <> '' THEN 'COMPRESSION ' || c.attcompression::text END,
               'OPTIONS ' || nullif(array_to_string(ARRAY(SELECT o FROM unnest(c.attoptions) o
                                                           WHERE o NOT LIKE 'pg\_attver=%' ORDER BY o), ', '), ''),
               CASE WHEN c.attinhcount > 0 OR NOT c.attislocal
                    THEN format('inherited %s times, local %s', c.attinhcount, c.attislocal) END)
      FROM cols c
    UNION ALL
    SELECT k.owner_label, 30, k.conname, 0,
           k.owner_label || ' constraint ' || quote_ident(k.conname) || ': ' || pg_get_constraintdef(k.oid)
           || concat_ws(', ', '', CASE WHEN k.condeferrable THEN 'deferrable' ELSE 'not deferrable' END,
                        CASE WHEN k.condeferred THEN 'initially deferred' ELSE 'initially immediate' END,
                        CASE WHEN k.convalidated THEN 'validated' ELSE 'not validated' END,
                        CASE WHEN k.connoinherit THEN 'no inherit' END,
                        CASE WHEN NOT k.conislocal OR k.coninhcount > 0
                             THEN format('inherited %s times, local %s', k.coninhcount, k.conislocal) END)
      FROM cons k
    UNION ALL
    SELECT i.owner_label, 40, i.relname, 0,
           i.owner_label || ' index ' || quote_ident(i.relname) || ': ' || pg_get_indexdef(i.oid)
           || concat_ws(', ', '', CASE WHEN i.indisclustered THEN 'clustered' END,
                        CASE WHEN i.indisreplident THEN 'replica identity' END,
                        CASE WHEN NOT i.indisvalid THEN 'INVALID' END,
                        CASE WHEN i.indnullsnotdistinct THEN 'nulls not distinct' END)
      FROM idx i
    UNION ALL
    SELECT g.owner_label, 50, g.tgname, 0,
           g.owner_label || ' trigger ' || quote_ident(g.tgname) || ': ' || pg_get_triggerdef(g.oid)
           || ', ' || CASE g.tgenabled WHEN 'O' THEN 'enabled' WHEN 'D' THEN 'disabled'
                                       WHEN 'R' THEN 'enabled on replica' WHEN 'A' THEN 'enabled always' END
      FROM trigs g
    UNION ALL
    SELECT p.owner_label, 60, p.polname, 0,
           p.owner_label || ' policy ' || quote_ident(p.polname) || ': '
           || CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END
           || ' for ' || CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                       WHEN 'd' THEN 'DELETE' WHEN '*' THEN 'ALL' END
           || ' to ' || (SELECT string_agg(CASE WHEN ro = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(ro)) END,
                                           ', ' ORDER BY CASE WHEN ro = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(ro)::text END)
                           FROM unnest(p.polroles) ro)
           || coalesce(' using (' || pg_get_expr(p.polqual, p.polrelid) || ')', '')
           || coalesce(' with check (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')', '')
      FROM pols p
    UNION ALL
    SELECT w.owner_label, 70, w.rulename, 0,
           w.owner_label || ' rule ' || quote_ident(w.rulename) || ': ' || pg_get_ruledef(w.oid)
           || ', ' || CASE w.ev_enabled WHEN 'O' THEN 'enabled' WHEN 'D' THEN 'disabled'
                                        WHEN 'R' THEN 'enabled on replica' WHEN 'A' THEN 'enabled always' END
      FROM rules w
    UNION ALL
    SELECT r.label, 80, '', 0,
           r.label || E': definition\n    ' || replace(rtrim(pg_get_viewdef(r.oid, true), E'\n '), E'\n', E'\n    ')
      FROM rels r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT r.label, 90, '', 0,
           r.label || ': ' || format('%s start %s increment %s min %s max %s cache %s%s',
               format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement, q.seqmin, q.seqmax, q.seqcache,
               CASE WHEN q.seqcycle THEN ' cycle' ELSE ' no cycle' END)
           || coalesce((SELECT string_agg(', owned by ' || d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                                          || CASE d.deptype WHEN 'i' THEN ' (identity)' ELSE '' END, '')
                          FROM pg_depend d
                          JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')), '')
      FROM rels r JOIN pg_sequence q ON q.seqrelid = r.oid

    -- Functions, procedures and aggregates.
    UNION ALL
    SELECT f.label, 0, '', 0, f.label || ': owner ' || pg_get_userbyid(f.proowner) FROM funcs f
    UNION ALL
    SELECT f.label, 80, '', 0,
           f.label || E': definition\n    '
           || replace(rtrim(pg_get_functiondef(f.oid), E'\n '), E'\n', E'\n    ')
      FROM funcs f WHERE f.prokind <> 'a'
    UNION ALL
    SELECT f.label, 80, '', 0,
           f.label || ': ' || format('transition %s, state %s, final %s, combine %s, initial value %L, kind %s',
               ag.aggtransfn::regprocedure, format_type(ag.aggtranstype, NULL),
               nullif(ag.aggfinalfn, 0)::regprocedure, nullif(ag.aggcombinefn, 0)::regprocedure,
               ag.agginitval, ag.aggkind)
           || ', ' || concat_ws(' ', CASE f.proparallel WHEN 's' THEN 'PARALLEL SAFE' WHEN 'r' THEN 'PARALLEL RESTRICTED'
                                                        ELSE 'PARALLEL UNSAFE' END,
                                CASE f.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END)
      FROM funcs f JOIN pg_aggregate ag ON ag.aggfnoid = f.oid

    -- Types.
    UNION ALL
    SELECT t.label, 0, '', 0,
           t.label || ': owner ' || pg_get_userbyid(t.typowner) || ', ' ||
           CASE t.typtype
               WHEN 'e' THEN 'enum (' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                                            FROM pg_enum e WHERE e.enumtypid = t.oid) || ')'
               WHEN 'c' THEN 'composite'
               WHEN 'd' THEN 'domain over ' || format_type(t.typbasetype, t.typtypmod)
                             || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                             || coalesce(' DEFAULT ' || pg_get_expr(t.typdefaultbin, 0), '')
                             || coalesce((SELECT ' COLLATE ' || quote_ident(co.collname) FROM pg_collation co
                                           WHERE co.oid = t.typcollation
                                             AND t.typcollation <> (SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype)), '')
               WHEN 'r' THEN 'range of ' || (SELECT format_type(g.rngsubtype, NULL) || coalesce(', canonical ' || nullif(g.rngcanonical, 0)::regproc::text, '')
                                                    || coalesce(', subtype diff ' || nullif(g.rngsubdiff, 0)::regproc::text, '')
                                               FROM pg_range g WHERE g.rngtypid = t.oid)
               WHEN 'b' THEN format('base type: input %s, output %s, receive %s, send %s, length %s, by value %s, align %s, storage %s, category %s',
                                    t.typinput, t.typoutput, t.typreceive, t.typsend, t.typlen, t.typbyval,
                                    t.typalign, t.typstorage, t.typcategory)
               ELSE 'type kind ' || t.typtype::text
           END
      FROM types t

    -- Operators.
    UNION ALL
    SELECT o.label, 0, '', 0,
           o.label || ': ' || format('owner %s, returns %s, function %s, commutator %s, negator %s, restrict %s, join %s, hashes %s, merges %s',
               pg_get_userbyid(o.oprowner), format_type(o.oprresult, NULL), o.oprcode::regprocedure,
               nullif(o.oprcom, 0)::regoperator, nullif(o.oprnegate, 0)::regoperator,
               nullif(o.oprrest, 0)::regprocedure, nullif(o.oprjoin, 0)::regprocedure, o.oprcanhash, o.oprcanmerge)
      FROM opers o

    -- Any other kind of object of the extension: that it exists.
    UNION ALL
    SELECT 'object ' || io.type || ' ' || io.identity, 0, '', 0,
           'object ' || io.type || ' ' || io.identity || ': ' || pg_describe_object(m.classid, m.objid, 0)
      FROM members m, pg_identify_object(m.classid, m.objid, 0) io
     WHERE m.classid NOT IN ('pg_class'::regclass, 'pg_proc'::regclass, 'pg_type'::regclass,
                             'pg_namespace'::regclass, 'pg_constraint'::regclass, 'pg_trigger'::regclass,
                             'pg_policy'::regclass, 'pg_rewrite'::regclass, 'pg_attrdef'::regclass,
                             'pg_operator'::regclass)

    -- Comments.
    UNION ALL
    SELECT d.k1, d.k2, d.k3, 1, d.label || ': comment ' || quote_literal(c.description)
      FROM described d
      JOIN pg_description c ON c.classoid = d.classid AND c.objoid = d.objid AND c.objsubid = d.objsubid

    -- Privileges, one line per grantee and grantor.
    UNION ALL
    SELECT a.k1, a.k2, a.k3, 2,
           a.label || ': grant ' || string_agg(x.privilege_type, ', ' ORDER BY x.privilege_type)
           || ' to ' || CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END
           || CASE WHEN x.is_grantable THEN ' with grant option' ELSE '' END
           || ' (by ' || pg_get_userbyid(x.grantor) || ')'
      FROM acls a,
           aclexplode(coalesce(a.acl, acldefault(a.kind, a.owner))) x
     WHERE a.acl IS NOT NULL OR a.owner IS NOT NULL
     GROUP BY a.k1, a.k2, a.k3, a.label, x.grantee, x.grantor, x.is_grantable

    -- The roles of aimroute, and what they may do outside the extension.
    UNION ALL
    SELECT 'role ' || quote_ident(r.rolname), 0, '', 0,
           'role ' || quote_ident(r.rolname) || ': ' || concat_ws(', ',
               CASE WHEN r.rolcanlogin THEN 'login' ELSE 'nologin' END,
               CASE WHEN r.rolsuper THEN 'superuser' END, CASE WHEN r.rolinherit THEN 'inherit' ELSE 'noinherit' END,
               CASE WHEN r.rolcreaterole THEN 'createrole' END, CASE WHEN r.rolcreatedb THEN 'createdb' END,
               CASE WHEN r.rolreplication THEN 'replication' END, CASE WHEN r.rolbypassrls THEN 'bypassrls' END,
               (SELECT 'member of ' || string_agg(quote_ident(pg_get_userbyid(m.roleid)), ', ' ORDER BY pg_get_userbyid(m.roleid))
                  FROM pg_auth_members m WHERE m.member = r.oid),
               (SELECT 'comment ' || quote_literal(s.description) FROM pg_shdescription s
                 WHERE s.classoid = 'pg_authid'::regclass AND s.objoid = r.oid))
      FROM pg_roles r WHERE r.rolname IN ('aimroute_admin', 'aimroute_region', 'aimroute_dealer', 'aimroute_view_link')
    UNION ALL
    SELECT 'role ' || quote_ident(pg_get_userbyid(x.grantee)), 10, o.what, 0,
           'role ' || quote_ident(pg_get_userbyid(x.grantee)) || ': granted '
           || string_agg(x.privilege_type, ', ' ORDER BY x.privilege_type) || ' on ' || o.what
           || CASE WHEN x.is_grantable THEN ' with grant option' ELSE '' END
      FROM (SELECT 'table ' || c.oid::regclass::text, c.relacl FROM pg_class c
             WHERE NOT EXISTS (SELECT FROM rels r WHERE r.oid = c.oid)
            UNION ALL
            SELECT 'column ' || a.attrelid::regclass::text || '.' || quote_ident(a.attname), a.attacl
              FROM pg_attribute a WHERE a.attacl IS NOT NULL AND NOT EXISTS (SELECT FROM rels r WHERE r.oid = a.attrelid)
            UNION ALL
            SELECT 'function ' || p.oid::regprocedure::text, p.proacl FROM pg_proc p
             WHERE NOT EXISTS (SELECT FROM funcs f WHERE f.oid = p.oid)
            UNION ALL
            SELECT 'type ' || format_type(t.oid, NULL), t.typacl FROM pg_type t
             WHERE NOT EXISTS (SELECT FROM types x WHERE x.oid = t.oid)
            UNION ALL
            SELECT 'schema ' || quote_ident(n.nspname), n.nspacl FROM pg_namespace n
             WHERE NOT EXISTS (SELECT FROM schemas s WHERE s.oid = n.oid)
            UNION ALL
            SELECT 'language ' || quote_ident(l.lanname), l.lanacl FROM pg_language l
            UNION ALL
            SELECT 'this database', d.datacl FROM pg_database d WHERE d.datname = current_database()
           ) AS o(what, acl),
           aclexplode(o.acl) x
     WHERE pg_get_userbyid(x.grantee) IN ('aimroute_admin', 'aimroute_region', 'aimroute_dealer', 'aimroute_view_link')
     GROUP BY x.grantee, o.what, x.is_grantable
    UNION ALL
    SELECT 'default privileges', 0, '', 0,
           format('default privileges of %s in %s on %s: %s', pg_get_userbyid(a.defaclrole),
                  coalesce((SELECT quote_ident(n.nspname) FROM pg_namespace n WHERE n.oid = a.defaclnamespace), 'all schemas'),
                  a.defaclobjtype, (SELECT string_agg(x::text, ', ' ORDER BY x::text) FROM unnest(a.defaclacl) x))
      FROM pg_default_acl a
     WHERE a.defaclnamespace IN (SELECT s.oid FROM schemas s)
        OR pg_get_userbyid(a.defaclrole) IN ('aimroute_admin', 'aimroute_region', 'aimroute_dealer', 'aimroute_view_link')
)
SELECT string_agg(l.line, E'\n' ORDER BY l.k1 COLLATE "C", l.k2, l.k3 COLLATE "C", l.k4, l.line COLLATE "C")
  FROM lines l;
