#!/usr/bin/python3
"""scan_logs.py - sort the memcheck errors of a scripts/valgrind.sh run.

Usage: /usr/bin/python3 test/valgrind/scan_logs.py LOG_DIR SRC_DIR SERVER_LOG REPORT

LOG_DIR holds one valgrind log per process (--log-file=LOG_DIR/%p.log,
written with --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END).  A
frame is aimroute's when it is "(in .../aimroute.so)" or its source file is
one of SRC_DIR's *.c and *.h files.  Each error falls in one of three
classes:

  aimroute       a stack it prints (where it happened, where the block was
                 allocated or freed, where an uninitialised value came
                 from) has an aimroute frame, and it is not one of KNOWN
                 below;
  known          one of PostgreSQL's own false positives (KNOWN): the
                 error starts with the given message and happens in the
                 given PostgreSQL function within the first frames.  An
                 aimroute frame may stand only below the frame that answers
                 for each stack (aimroute called PostgreSQL, as a background
                 worker does when it commits): that function, or in a stack
                 without it (the origin of uninitialised bytes, a block's
                 allocation) the first named function that is not an
                 allocator, which must not be aimroute's either;
  other          the rest: PostgreSQL, PostGIS or a library on its own.

SERVER_LOG (log_line_prefix '%m [%p] <%b|%a> ', log_connections = on) names
the process of each pid.  Every error goes to REPORT, a summary to stdout.
Exits 1 when an error is aimroute's, 0 otherwise.
"""
import collections
import os
import re
import sys

# PostgreSQL's false positives that a suppression cannot cover whole
# (test/valgrind/postgresql.supp says why): name, message, the PostgreSQL
# functions it happens in, and how many frames above them at most.
KNOWN = [
    # WAL pages are written whole, with the padding of WAL records.
    ("pg15-wal-write-padding", "Syscall param pwrite64(buf) points to uninitialised byte(s)",
     ("XLogFlush", "XLogBackgroundFlush"), 2),
    # The relcache init file is written from structs with padding.
    ("pg15-relcache-init-file-padding", "Syscall param write(buf) points to uninitialised byte(s)",
     ("RelationCacheInitializePhase3",), 10),
    # The regular-expression cache moves its entries with memmove, seen as __memcpy_chk.
    ("pg15-regex-cache-memmove-chk", "Source and destination overlap in memcpy_chk",
     ("RE_compile_and_cache",), 1),
]

BEGIN = "VALGRINDERROR-BEGIN"
END = "VALGRINDERROR-END"
FRAME = re.compile(r"^\s+(?:at|by) 0x[0-9A-Fa-f]+: (.*)$")
SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) errors from (\d+) contexts \(suppressed: (\d+) from (\d+)\)")
USED_SUPP = re.compile(r"used_suppression:\s+(\d+) (\S+)")
AUTHORIZED = re.compile(r"connection authorized: user=\S+ database=(\S+)(?: application_name=(\S+))?")
PREFIX = re.compile(r"^==(?:[0-9:.]+ )?\d+== ?")  # with --time-stamp=yes: ==hh:mm:ss:ms.ms pid==
SERVER_LINE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] <([^|>]*)\|([^>]*)> ")


def function(frame):
    """function gives the function name of a frame's text ("???" when unknown)."""
    return frame.split(" (")[0]


def is_aimroute(frame, sources):
    """is_aimroute tells whether a stack frame's text is in aimroute.so."""
    if "/aimroute.so)" in frame:
        return True
    m = re.search(r"\(([^():]+):\d+\)$", frame)
    return bool(m and m.group(1) in sources)


def stacks(block):
    """stacks splits an error into its stacks: lists of frame texts, the first where it happened."""
    out, current = [], None
    for line in block[1:]:
        m = FRAME.match(line)
        if m:
            if current is None:
                current = []
                out.append(current)
            current.append(m.group(1))
        else:
            current = None
    return out


# Functions that only hand out memory: the code that asked for it is below them.
ALLOCATORS = re.compile(r"^(malloc|calloc|realloc|palloc.*|repalloc.*|MemoryContextAlloc.*|MemoryContextStrdup"
                        r"|pstrdup|pnstrdup|psprintf|initStringInfo|makeStringInfo|enlargeStringInfo|\?\?\?)$")


def owner(stack, anchors):
    """owner gives the index of the frame that answers for a stack: the known
    PostgreSQL function if the stack has it, else the first named function
    that is not an allocator (the code that asked for the memory)."""
    fns = [function(fr) for fr in stack]
    for i, fn in enumerate(fns):
        if fn in anchors:
            return i
    for i, fn in enumerate(fns):
        if not ALLOCATORS.match(fn):
            return i
    return len(stack) - 1


def classify(block, sources):
    """classify gives ("aimroute" | "known" | "other", known name or None, aimroute frames)."""
    all_stacks = stacks(block)
    ours = [fr for st in all_stacks for fr in st if is_aimroute(fr, sources)]
    message = block[0] if block else ""
    for name, prefix, anchors, depth in KNOWN:
        if not message.startswith(prefix) or not all_stacks:
            continue
        main = [function(fr) for fr in all_stacks[0]]
        at = next((i for i, fn in enumerate(main) if fn in anchors), None)
        if at is None or at > depth:
            continue
        if all(not any(is_aimroute(fr, sources) for fr in st[:owner(st, anchors) + 1]) for st in all_stacks):
            return "known", name, ours
    return ("aimroute" if ours else "other"), None, ours


def shortened(block, depth=10):
    """shortened gives the lines of an error with each stack cut to its top depth frames."""
    lines, n = [], 0
    for line in block:
        if not line.strip():
            continue
        if FRAME.match(line):
            n += 1
            if n == depth + 1:
                lines.append("     ...")
            if n > depth:
                continue
        else:
            n = 0
        lines.append(line)
    return lines


def process_names(server_log):
    """process_names maps each pid in the server log to what the process was."""
    kinds, apps = {}, {}
    try:
        with open(server_log, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = SERVER_LINE.match(line)
                if not m:
                    continue
                pid, kind, app = int(m.group(1)), m.group(2).strip(), m.group(3)
                if kind and kind != "not initialized":
                    kinds[pid] = kind
                # log_connections names the client before %a is set.
                c = AUTHORIZED.search(line)
                if c:
                    apps[pid] = f"{c.group(2) or 'no application name'}, database {c.group(1)}"
                elif app and app != "[unknown]" and pid in apps:
                    apps[pid] = app + ", " + apps[pid].split(", ")[-1]
    except OSError:
        pass
    return {pid: kind + (f" ({apps[pid]})" if pid in apps else "") for pid, kind in kinds.items()}


def scan(log_dir):
    """scan reads every log in log_dir; returns its errors, totals, suppressions and oddities."""
    errors = []  # (pid, lines of the error)
    totals = collections.Counter()
    used = collections.Counter()
    unfinished, terminated = [], []
    for name in sorted(os.listdir(log_dir)):
        if not name.endswith(".log"):
            continue
        pid = int(name[:-4]) if name[:-4].isdigit() else 0
        block, summary, seen = None, None, set()
        with open(os.path.join(log_dir, name), encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = PREFIX.sub("", raw.rstrip("\n"))
                if line == BEGIN:
                    block = []
                elif line == END and block is not None:
                    text = "\n".join(block).strip()
                    # The list printed at exit (-s) repeats errors already shown.
                    if text and text not in seen:
                        seen.add(text)
                        errors.append((pid, [x for x in block if x.strip()]))
                    block = None
                elif block is not None:
                    block.append(line)
                else:
                    m = SUMMARY.search(line)
                    if m:  # printed twice with -s; the last one counts
                        summary = m
                    m = USED_SUPP.search(line)
                    if m:
                        used[m.group(2)] += int(m.group(1))
                    if "Process terminating with default action of signal" in line:
                        terminated.append((pid, line.strip()))
        totals["processes"] += 1
        if summary:
            totals["errors"] += int(summary.group(1))
            totals["suppressed"] += int(summary.group(3))
        else:
            unfinished.append(pid)
    return errors, totals, used, unfinished, terminated


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    log_dir, src_dir, server_log, report = sys.argv[1:]
    sources = {f for f in os.listdir(src_dir) if f.endswith((".c", ".h"))}
    names = process_names(server_log)
    errors, totals, used, unfinished, terminated = scan(log_dir)
    classes = collections.defaultdict(list)
    for pid, block in errors:
        cls, known, ours = classify(block, sources)
        classes[cls].append((pid, block, known, ours))

    def title(pid):
        return f"pid {pid}: {names.get(pid, 'process not named in the server log')}"

    headings = (("aimroute", "errors with an aimroute frame"),
                ("known", "known PostgreSQL false positives (KNOWN in test/valgrind/scan_logs.py)"),
                ("other", "other errors"))
    with open(report, "w", encoding="utf-8") as out:
        for cls, heading in headings:
            out.write(f"#### {len(classes[cls])} {heading}\n\n")
            for pid, block, known, _ in classes[cls]:
                out.write(f"== {title(pid)}" + (f" [{known}]" if known else "") + "\n")
                out.write("\n".join(block) + "\n\n")

    reached = collections.Counter((known, function(ours[0])) for _, _, known, ours in classes["known"] if ours)
    plain = collections.Counter(known for _, _, known, ours in classes["known"] if not ours)
    print(f"processes traced:                 {totals['processes']}")
    print(f"errors reported (occurrences):    {totals['errors']}")
    print(f"distinct errors (per process):    {len(errors)}")
    print(f"  with an aimroute frame:         {len(classes['aimroute'])}")
    print(f"  known PostgreSQL false positive: {len(classes['known'])}")
    for known, n in sorted(plain.items()):
        print(f"    {known}: {n}")
    for (known, caller), n in sorted(reached.items()):
        print(f"    {known}, called from aimroute's {caller}: {n}")
    print(f"  other:                          {len(classes['other'])}")
    print(f"suppressed (occurrences):         {totals['suppressed']}")
    for supp, n in sorted(used.items()):
        print(f"    {supp}: {n}")
    for pid in unfinished:
        print(f"warning: no ERROR SUMMARY in {pid}.log: {title(pid)} did not finish under valgrind")
    for pid, line in terminated:
        print(f"warning: {title(pid)}: {line}")
    for pid, block, _, _ in classes["aimroute"]:
        print(f"\naimroute error, {title(pid)}:")
        print("  " + "\n  ".join(shortened(block)))
    for pid, block, _, _ in classes["other"]:
        top = [function(fr) for fr in (stacks(block) or [[]])[0][:4]]
        print(f"\nother error, {title(pid)}: {block[0] if block else '?'}\n    " + " < ".join(top))
    print(f"\nfull report: {report}")
    return 1 if classes["aimroute"] else 0


if __name__ == "__main__":
    sys.exit(main())
